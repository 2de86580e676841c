"""The ``fjord`` command line. Library modules never import from here; this layer may load stages lazily."""
