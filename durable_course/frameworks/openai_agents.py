"""The course's agent written with the OpenAI Agents SDK, made durable by Temporal's integration.

Temporal's `OpenAIAgentsPlugin` (package `temporalio-openai-agents`, imported as
`temporalio.contrib.openai_agents`) turns the SDK's primitives into Temporal's:

- the code that calls `Runner.run(agent, ...)` is a workflow you write (`OpenAIAgentsWorkflow` below);
- every model call becomes the activity `invoke_model_activity`, with the timeouts and retry policy given
  once, to the plugin, as `ModelActivityParameters` (`MODEL_PARAMS`);
- a tool becomes an activity only if you say so, with `activity_as_tool(fn, ...)` and its own options
  (`TOOL_OPTIONS`); a plain `@function_tool` would run inside the workflow, where it must make no I/O.

The model is the course's offline model reached through LiteLLM (the SDK's `LitellmModel`), so this agent
answers exactly as the course's agent does; set `LLM_MODEL` for a real one. Nothing here is imported by
`durable_agent`: the plugin lives on this worker's client only, because it brings its own data converter.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import os
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

# The SDK's own tracing exports to OpenAI's servers: off, the course runs offline (no key, nothing sent).
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "true")

with workflow.unsafe.imports_passed_through():
    from agents import Agent, Model, ModelProvider, ModelSettings, Runner
    from temporalio.contrib.openai_agents import ModelActivityParameters, OpenAIAgentsPlugin
    from temporalio.contrib.openai_agents.workflow import activity_as_tool

    from durable_agent import llm
    from durable_agent.config import settings

    from . import tools

NAME = "openai-agents"

# The same policies as the course agent's (durable_agent/workflow.py PLAN_ACTIVITY, TOOL_ACTIVITY).
MODEL_PARAMS = ModelActivityParameters(
    start_to_close_timeout=timedelta(seconds=90),
    heartbeat_timeout=timedelta(seconds=3),  # the plugin's model activity heartbeats by itself
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                             maximum_interval=timedelta(seconds=10), maximum_attempts=5),
)
TOOL_OPTIONS: dict[str, Any] = dict(
    start_to_close_timeout=timedelta(seconds=5),
    heartbeat_timeout=timedelta(seconds=2),
    schedule_to_close_timeout=timedelta(minutes=10),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                             maximum_interval=timedelta(seconds=5)),
)


# --- the tools, as activities (they run on the worker, never in the workflow) ------------------------------

@activity.defn(name="calculator")
async def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as '25 + 17' or '(2 ** 10) / 4'."""
    return tools.calculator(expression)


@activity.defn(name="weather")
async def weather(city: str) -> str:
    """Get the current weather for a city (simulated offline data)."""
    return tools.weather(city)


ACTIVITIES = [calculator, weather]


# --- the workflow: the agent loop is the SDK's Runner, run inside it ---------------------------------------

@workflow.defn(name="OpenAIAgentsWorkflow")
class OpenAIAgentsWorkflow:
    """One turn: a question in, the agent's answer out."""

    @workflow.run
    async def run(self, question: str) -> str:
        agent = Agent(
            name="Course agent",
            instructions=tools.INSTRUCTIONS,
            tools=[activity_as_tool(calculator, **TOOL_OPTIONS), activity_as_tool(weather, **TOOL_OPTIONS)],
        )
        result = await Runner.run(agent, question)
        return str(result.final_output)


# --- the model: the course's offline model through LiteLLM, on the worker ---------------------------------

def prepare() -> None:
    """Import what the first model call needs (LiteLLM, the SDK's LiteLLM model) before the worker polls: an
    import holds the interpreter for seconds, long enough to starve an activity's heartbeats."""
    llm.litellm_module()
    importlib.import_module("agents.extensions.models.litellm_model")


class CourseModel(Model):
    """The SDK's `LitellmModel` for `LLM_MODEL` (default: the course's offline model), created in the model
    activity once LiteLLM is imported (in a thread, so the worker's event loop never waits on the import)."""

    def __init__(self) -> None:
        self._model: Model | None = None

    async def _litellm_model(self) -> Model:
        if self._model is None:
            await llm.litellm_ready()  # imports LiteLLM and registers the offline provider
            # The SDK's LiteLLM module takes a while to import, too: in a thread, so heartbeats go on.
            module = await asyncio.to_thread(importlib.import_module, "agents.extensions.models.litellm_model")
            config = settings()
            self._model = module.LitellmModel(model=config.llm_model, base_url=config.llm_api_base)
        return self._model

    async def get_response(self, system_instructions: Any, input: Any, model_settings: ModelSettings,
                           *args: Any, **kwargs: Any) -> Any:
        # No reasoning or verbosity settings (the SDK's defaults ask for some; the offline model has none), and
        # drop_params: LiteLLM leaves out whatever else a provider does not take.
        settings_ = dataclasses.replace(model_settings, reasoning=None, verbosity=None,
                                        extra_args={**(model_settings.extra_args or {}), "drop_params": True})
        return await (await self._litellm_model()).get_response(system_instructions, input, settings_, *args, **kwargs)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("this course's framework agents do not stream")


def _not_about_usage(record: logging.LogRecord) -> bool:
    return "No usage information" not in record.getMessage()


# The offline model counts no tokens; the SDK would warn about it on every call.
logging.getLogger("openai.agents").addFilter(_not_about_usage)


class CourseModelProvider(ModelProvider):
    def get_model(self, model_name: str | None) -> Model:
        return CourseModel()


def plugin() -> OpenAIAgentsPlugin:
    """The plugin for this worker's client: the model activity, its options, the data converter."""
    return OpenAIAgentsPlugin(model_params=MODEL_PARAMS, model_provider=CourseModelProvider())


WORKFLOW = OpenAIAgentsWorkflow
