"""The SOG codec: PLY splats <-> SOG v2 (.sog bundle or meta.json + WebP folder) and SOGS v1, in torch.

``encode.encode_cloud`` writes, ``decode.read_sog`` reads; ``stages.compress.compress`` is the pipeline stage.
"""
