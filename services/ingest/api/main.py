from fastapi import APIRouter

from services.ingest.api.routes import jobs

api_router = APIRouter()
api_router.include_router(jobs.router)
