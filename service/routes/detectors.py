"""The models this service runs."""

from __future__ import annotations

from fastapi import APIRouter

from service.routes.deps import EngineDep
from service.schemas import Error, ModelInfo, ModelList

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=ModelList, responses={503: {"model": Error}})
async def list_models(engine: EngineDep) -> ModelList:
    return ModelList(
        models=[
            ModelInfo(
                name=model.name,
                parameters=model.parameters,
                frames=model.frames,
                size_multiple=model.size_multiple,
                weights_sha256=model.weights_sha256,
                weights_source=model.weights_source,
                backend=model.backend,
                peak_bytes_per_pixel=model.peak_bytes_per_pixel,
                peak_bytes_per_pixel_squared=model.peak_bytes_per_pixel_squared,
                state_bytes_per_pixel=model.state_bytes_per_pixel,
                device=model.device,
                default=model.name == engine.settings.default_model,
                stream_default=model.name == engine.stream_model(),
            )
            for model in engine.models()
        ],
        memory_budget_bytes=engine.worker.memory_budget_bytes,
    )
