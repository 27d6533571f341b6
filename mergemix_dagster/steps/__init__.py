"""The work behind the assets that needs the store or the database, so it cannot live in the framework-free
core: proxy scoring, the search's inputs, storing and verifying the chosen mixture, reference runs, the
sub-domain search and hierarchy study, the validation study and its report, the UI metadata helpers and
``stage_asset`` (the decorator most stage assets share). Assets (one layer up) declare what Dagster sees and call these."""
