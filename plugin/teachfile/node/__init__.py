"""The node: the plugin's runtime behind Orthanc's callbacks.

``service`` turns a received instance into an answer for Orthanc and keeps the counters and the
refusal log (``state``); ``keys`` and ``keycheck`` hold the node's secrets and the scale-out key
check; ``roles`` maps users to what they may do.
"""
