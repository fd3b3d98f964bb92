"""TorchServe's side of the wire: the project's tensor payload (`payload`) and model signatures (`signature`).

Pure conversions with numpy and the standard library only: the project's TorchServe handler
(`runtimes/torchserve`) carries these modules inside each model archive, where the gateway's own
dependencies are not installed.
"""
