"""The course's agent written with Pydantic AI, made durable by its Temporal integration.

Pydantic AI's `TemporalDurability` capability (`pydantic_ai.durable_exec.temporal`) turns the agent's
primitives into Temporal's:

- the code that calls `agent.run(...)` is a workflow you write (`PydanticAIAgentWorkflow` below), listing
  its agents in `__pydantic_ai_agents__` so that `PydanticAIPlugin` registers their activities;
- every model request becomes the activity `agent__<name>__model_request`, and every tool call the
  activity `agent__<name>__toolset__<toolset>__call_tool` (one activity type per toolset; the tool's name
  is in its input), with options given once, to the capability (`ACTIVITY_CONFIG`, `MODEL_ACTIVITY_CONFIG`);
- the plugin installs a Pydantic data converter, passes its modules through the workflow sandbox, and fails
  the workflow (instead of retrying its task forever) on the framework's user errors.

The model is `FunctionModel`, Pydantic AI's model for a local function: here the function sends the
conversation, in the OpenAI format, to the course's model through LiteLLM (`durable_agent.llm.complete`:
the offline model unless `LLM_MODEL` says otherwise), so this agent answers as the course's agent does.
Nothing here is imported by `durable_agent`.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityConfig

with workflow.unsafe.imports_passed_through():
    from pydantic_ai import Agent
    from pydantic_ai.durable_exec.temporal import PydanticAIPlugin, PydanticAIWorkflow, TemporalDurability
    from pydantic_ai.messages import (
        ModelMessage, ModelRequest, ModelResponse, RetryPromptPart, SystemPromptPart, TextPart, ToolCallPart,
        ToolReturnPart, UserPromptPart,
    )
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    from durable_agent import llm
    from durable_agent.config import settings

    from . import tools

NAME = "pydantic-ai"
AGENT_NAME = "course_agent"  # part of every activity's name: agent__course_agent__...

# The same policies as the course agent's (durable_agent/workflow.py TOOL_ACTIVITY, PLAN_ACTIVITY).
ACTIVITY_CONFIG = ActivityConfig(
    start_to_close_timeout=timedelta(seconds=5),
    heartbeat_timeout=timedelta(seconds=2),  # the integration heartbeats in the background
    schedule_to_close_timeout=timedelta(minutes=10),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                             maximum_interval=timedelta(seconds=5)),
)
MODEL_ACTIVITY_CONFIG = ActivityConfig(
    start_to_close_timeout=timedelta(seconds=90),
    heartbeat_timeout=timedelta(seconds=3),
    schedule_to_close_timeout=None,
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                             maximum_interval=timedelta(seconds=10), maximum_attempts=5),
)


# --- the model: the course's model through LiteLLM, as a Pydantic AI FunctionModel ------------------------

def openai_messages(messages: list[ModelMessage], instructions: str | None = None) -> list[dict[str, Any]]:
    """Pydantic AI's message history in the OpenAI chat format that LiteLLM (and the offline model) read."""
    out: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    for message in messages:
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, SystemPromptPart):
                    out.append({"role": "system", "content": part.content})
                elif isinstance(part, UserPromptPart):
                    out.append({"role": "user", "content": part.content if isinstance(part.content, str)
                                else " ".join(str(c) for c in part.content)})
                elif isinstance(part, ToolReturnPart):
                    out.append({"role": "tool", "tool_call_id": part.tool_call_id, "content": part.model_response_str()})
                elif isinstance(part, RetryPromptPart):
                    out.append({"role": "tool" if part.tool_name else "user", "tool_call_id": part.tool_call_id,
                                "content": part.model_response()})
        elif isinstance(message, ModelResponse):
            text = "".join(p.content for p in message.parts if isinstance(p, TextPart))
            calls = [{"id": p.tool_call_id, "type": "function",
                      "function": {"name": p.tool_name, "arguments": p.args_as_json_str()}}
                     for p in message.parts if isinstance(p, ToolCallPart)]
            out.append({"role": "assistant", "content": text or None, **({"tool_calls": calls} if calls else {})})
    return out


async def course_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """One model call, through LiteLLM: the conversation and the tools in, the assistant's message back."""
    specs = [{"type": "function", "function": {"name": t.name, "description": t.description or "",
                                               "parameters": t.parameters_json_schema}}
             for t in info.function_tools]
    config = settings()
    reply = await llm.complete(openai_messages(messages, info.instructions), specs,
                               llm.LLMConfig(model=config.llm_model, api_base=config.llm_api_base,
                                             timeout_seconds=config.llm_timeout_seconds))
    parts: list[Any] = [ToolCallPart(c["function"]["name"], json.loads(c["function"]["arguments"] or "{}"),
                                     tool_call_id=c["id"]) for c in reply.get("tool_calls") or []]
    if reply.get("content"):
        parts.insert(0, TextPart(reply["content"]))
    return ModelResponse(parts=parts, model_name=config.llm_model)


def prepare() -> None:
    """Import LiteLLM before the worker polls: an import holds the interpreter for seconds, long enough to
    starve an activity's heartbeats."""
    llm.litellm_module()


# --- the agent: its tools are the course's functions -------------------------------------------------------

agent = Agent(
    FunctionModel(course_model, model_name="course-model"),
    name=AGENT_NAME,
    instructions=tools.INSTRUCTIONS,
    tools=[tools.calculator, tools.weather],
    capabilities=[TemporalDurability(activity_config=ACTIVITY_CONFIG, model_activity_config=MODEL_ACTIVITY_CONFIG)],
)


# --- the workflow ------------------------------------------------------------------------------------------

@workflow.defn(name="PydanticAIAgentWorkflow")
class PydanticAIAgentWorkflow(PydanticAIWorkflow):
    """One turn: a question in, the agent's answer out."""

    __pydantic_ai_agents__ = [agent]

    @workflow.run
    async def run(self, question: str) -> str:
        result = await agent.run(question)
        return result.output


def plugin() -> PydanticAIPlugin:
    """The plugin for this worker's client: the data converter, the sandbox's passthrough modules, and the
    activities of every agent listed in a workflow's `__pydantic_ai_agents__`."""
    return PydanticAIPlugin()


WORKFLOW = PydanticAIAgentWorkflow
ACTIVITIES: list[Any] = []  # the plugin registers the agent's activities itself
