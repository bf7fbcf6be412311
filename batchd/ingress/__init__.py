"""The HTTP ingress of `batchd run`: producers in any language submit and fetch over HTTP, and
an Anthropic SDK pointed at `POST /v1/messages` gets its Messages answered through batches.
"""
