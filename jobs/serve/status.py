"""Model status and metadata as TF Serving's protos, for gRPC, and as its JSON, for REST.

REST prints them as TF Serving does (``http_rest_api_util.cc: ToJsonString``): protobuf's JSON with
whitespace and every primitive field, proto field names for the metadata, and the metadata response
glued from its two parts (``{"model_spec": ..., "metadata": {"signature_def": ...}}``).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from jobs.serve.models import STATES, ModelManager


def status_proto(manager: ModelManager, name: str, version: int | None, label: str | None) -> Any:
    from tensorflow_serving.apis import get_model_status_pb2

    response = get_model_status_pb2.GetModelStatusResponse()
    for number, status in manager.status(name, version, label):
        entry = response.model_version_status.add()
        entry.version = number
        entry.state = STATES.index(status.state) * 10
        entry.status.SetInParent()  # TF Serving always sends a status: error_code OK when all is well
        if status.error is not None:
            entry.status.error_code = status.error[0].grpc
            entry.status.error_message = status.error[1]
    return response


def metadata_proto(manager: ModelManager, name: str, version: int | None, label: str | None) -> Any:
    from tensorflow_serving.apis import get_model_metadata_pb2

    loaded = manager.resolve(name, version, label)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = name
    response.model_spec.version.value = loaded.version
    signatures = get_model_metadata_pb2.SignatureDefMap()
    for key, definition in loaded.signature_defs.items():
        signatures.signature_def[key].CopyFrom(definition)
    response.metadata["signature_def"].Pack(signatures)
    return response


def _json(message: Any, *, proto_names: bool) -> str:
    return json_format.MessageToJson(
        message, preserving_proto_field_name=proto_names, indent=1, always_print_fields_with_no_presence=True
    )


def status_json(manager: ModelManager, name: str, version: int | None, label: str | None) -> str:
    return _json(status_proto(manager, name, version, label), proto_names=True)


def metadata_json(manager: ModelManager, name: str, version: int | None, label: str | None) -> str:
    from tensorflow_serving.apis import get_model_metadata_pb2

    response = metadata_proto(manager, name, version, label)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    return (
        "{\n"
        f'"model_spec":{_json(response.model_spec, proto_names=True)},\n'
        f'"metadata": {{"signature_def": {_json(signatures, proto_names=True)}}}\n'
        "}\n"
    )
