"""TF Serving's gRPC and REST APIs served by TensorFlow itself, for hosts without `tensorflow_model_server`.

SavedModels from TF Serving's layout, its flags and config files, its batching parameters mapped onto
the shared dynamic batcher (`runtimes.common.batching`). See README.md beside this file.
"""
