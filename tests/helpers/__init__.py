"""What several test modules share: real server processes, tiny ONNX models, zoo references, apps."""
