"""TensorFlow Serving's wire formats: TensorProto, SignatureDef metadata, Predict messages, REST JSON."""
