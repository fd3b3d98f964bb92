"""What TorchServe needs from the project: the tensor handler, model packaging, config and launcher.

`handler` (imports torch) runs inside TorchServe's worker; `archive`, `config` and `launcher` import
neither torch nor TorchServe, so the gateway and the local stack can use them. See README.md here.
"""
