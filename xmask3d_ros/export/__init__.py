"""Export of XMask3D's dense parts: ONNX graphs, parity, manifest, TensorRT engines, runtimes.

Sits above ``model/`` (imports model, config, geometry, data; never pipeline, replay or ros).
Kept import-free so that ``import xmask3d_ros.export.<part>`` loads only that part; onnx,
onnxruntime and tensorrt are imported lazily where they are needed.

    graphs.py            one wrapper module per exported graph (named inputs/outputs, dynamic axes)
    onnx_export.py       torch -> ONNX (TorchScript or dynamo exporter per graph), checked files
    parity.py            ONNX Runtime vs PyTorch on random and synthetic-room inputs
    manifest.py          manifest.json: shapes, opset, config and checkpoint hashes, parity, engines
    runtime.py           HeadRuntime: torch | onnxruntime | tensorrt, validated at start-up
    tensorrt_builder.py  engine builder (TensorRT Python API: fp16, profiles, timing cache)
    bundle.py            export_model(): all of the above for one model (xmask3d-export)
    errors.py            ExportError, ParityError, MissingEngineError, EngineMismatchError, ...

The sparse 3D branch (MinkUNet on either sparse backend) is not exported: it stays in PyTorch.
"""
