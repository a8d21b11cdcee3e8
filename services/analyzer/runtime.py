"""The analyzer's runtime objects, typed: the built-in backend every chunk gets, the job
directory, and the LLM stage for jobs whose analysis asks for the model."""

from __future__ import annotations

from dataclasses import dataclass

from services.analyzer.handler import PageEvent, analyze_chunks
from services.analyzer.interface import ChunkAnalyzer, get_analyzer
from services.analyzer.jobs import JobDirectory
from services.analyzer.llm import LlmEngine, LlmSettings, metrics
from services.analyzer.llm_stage import LlmStage
from shared.events import AnalyzedChunk
from shared.service import ServiceContext


@dataclass
class AnalyzerRuntime:
    builtin: ChunkAnalyzer
    jobs: JobDirectory
    llm: LlmStage

    async def analyze_page(self, event: PageEvent) -> tuple[list[AnalyzedChunk], str]:
        """Every chunk of the page event analysed by the job's backend, and that backend's
        name: the built-in fields always, and the model's results when the job asks for them."""
        items = await analyze_chunks(self.builtin, event)
        job = await self.jobs.analysis_of(event.job_id)
        if job is None or not job.uses_llm:
            return items, self.builtin.name
        analyses = await self.llm.analyze(
            event.job_id, job, [i.chunk for i in items], [i.analysis for i in items]
        )
        merged = [
            AnalyzedChunk(chunk=i.chunk, analysis=a) for i, a in zip(items, analyses, strict=True)
        ]
        return merged, "llm"

    async def model_ready(self) -> bool:
        """/readyz: false while the model refuses the deployment's key (401/403): the chunks
        that asked for it fail with that reason instead of piling into the dead letters."""
        await self.llm.started()
        engine = self.llm.engine
        # The deployment's model only: a model a job named, or another deployment's sharing
        # the database, does not make this process unready.
        return engine.settings.model not in await engine.refresh_misconfigured()


def build_runtime(ctx: ServiceContext, llm_settings: LlmSettings | None = None) -> AnalyzerRuntime:
    """The backend (DOCPIPE_ANALYZER) is chosen once. The LLM engine starts on first use
    (the first LLM job or /readyz): setup itself touches no database, as the AsyncAPI
    generator runs it without one."""
    engine = LlmEngine(ctx.pool, llm_settings or LlmSettings())
    settings = engine.settings
    metrics.register(
        settings.model,
        sorted(set(ctx.settings.tenants_by_key.values())),
        settings.tenant_daily_budget_usd,
        settings.tenant_monthly_budget_usd,
    )
    jobs = JobDirectory(ctx.pool, ctx.settings.analysis_jobs_cached)
    runtime = AnalyzerRuntime(get_analyzer(), jobs, LlmStage(engine, jobs))
    ctx.ready_checks["llm_model"] = runtime.model_ready
    return runtime
