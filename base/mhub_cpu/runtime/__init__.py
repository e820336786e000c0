"""The model runtime: OpenVINO networks compiled for this CPU, in a precision that is checked."""
