"""The ``teachfile`` command (``main``), its case commands (``cases``) and the ``make run``
launcher (``launcher``), which writes the node's configuration and starts Orthanc."""
