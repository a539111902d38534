"""orthanc-teachfile: a teaching-file node that never stores identifying data.

The package never imports ``orthanc``; only ``plugin/teachfile_entry.py`` does, so the
whole core runs and is tested in plain Python.
"""

__version__ = "0.1.0"
