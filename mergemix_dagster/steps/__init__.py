"""The work behind the assets that needs the store or the database, so it cannot live in the framework-free
core: proxy scoring, the search's inputs, reference runs, the sub-domain search, the validation study and
the UI metadata helpers. Assets (one layer up) declare what Dagster sees and call these."""
