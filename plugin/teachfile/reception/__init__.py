"""Reception: bytes in, a decision out. Everything :meth:`pipeline.Reception.process` calls.

Pure Python on pydicom datasets: no Orthanc, no network, no files written. The de-identification
rules (``profile``, ``deid``), the keyed pseudonyms (``pseudonym``), the node's mark (``seal``),
the burned-in text policy (``pixels``, ``ocr``), the JPEG 2000 policy and codecs (``transcode``,
``openjpeg``, ``frames``) and the residual-identifier audit (``audit``).
"""
