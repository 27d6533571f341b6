"""One merge method per file, each ``@register``-ed under its name (``core/merge/registry.py`` imports every
module here). Adding a method is adding a file: subclass ``MergeMethodBase``, give it a ``name``, implement
``combine`` (and ``combine_block`` if it is elementwise); ``merge_method: <name>`` in the settings uses it."""
