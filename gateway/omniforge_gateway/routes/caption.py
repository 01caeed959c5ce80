"""POST /caption: an image (multipart `file` or base64 JSON) -> a caption."""
from __future__ import annotations

from fastapi import APIRouter, Request

from omniforge_proto.v1 import common_pb2, fusion_pb2

from ..deps import FusionDep, SettingsDep
from ..errors import ApiError
from ..schemas import CaptionRequest, CaptionResponse
from ..uploads import decode_base64, limit_bytes, parse_body
from .search import _call, _doc

router = APIRouter(tags=["vision"])


@router.post("/caption", response_model=CaptionResponse, openapi_extra=_doc("CaptionRequest"))
async def caption(request: Request, fusion: FusionDep, settings: SettingsDep) -> CaptionResponse:
    """Greedy by default; `temperature` > 0 samples, `num_beams` > 1 searches beams."""
    body, upload = await parse_body(request, CaptionRequest)
    if (body.image is None) == (upload is None):
        raise ApiError(422, "invalid_request", "send the image as a multipart `file` or as base64 in `image` "
                       "(exactly one of them)")
    image = upload if upload is not None else decode_base64(body.image, field="image", limit=limit_bytes(request))
    if body.num_beams > 1 and body.temperature > 0:
        raise ApiError(422, "invalid_request", "beam search is deterministic: send temperature 0 with num_beams > 1")
    params = fusion_pb2.CaptionParams(max_tokens=body.max_tokens, temperature=body.temperature, top_k=body.top_k,
                                      top_p=body.top_p, num_beams=body.num_beams)
    if body.seed is not None:
        params.seed = body.seed
    reply = await _call(fusion, fusion.stub.Caption, fusion_pb2.CaptionRequest(
        model=common_pb2.ModelRef(name=body.model or ""), image=image, prompt=body.prompt, params=params), settings)
    return CaptionResponse(caption=reply.caption, finish_reason=reply.finish_reason, model=reply.model,
                           model_version=reply.model_version)
