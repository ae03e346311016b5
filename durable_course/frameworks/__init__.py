"""The course's agent written with two frameworks' Temporal integrations (notebook 10).

- `openai_agents`: the OpenAI Agents SDK with Temporal's `OpenAIAgentsPlugin` (`temporalio.contrib.openai_agents`).
- `pydantic_ai_agent`: Pydantic AI with its `TemporalDurability` capability (`pydantic_ai.durable_exec.temporal`).
- `worker`: a worker process for either (`python -m durable_course.frameworks worker NAME ...`).
- `lab`: the notebook's experiments: a turn each, a SIGKILL mid-turn, the histories.
- `comparison()`: what each turns into a workflow, an activity, a retry policy, and what it leaves to you.

Same tools (`durable_agent/tools.py`), same model (the offline model through LiteLLM), same Temporal server;
only the framework changes. The agent (`durable_agent`) imports none of this; importing this package
imports no framework either (each takes seconds): `openai_agents` and `pydantic_ai_agent` do.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

COLUMNS = ("", "course agent (durable_agent)", "OpenAI Agents SDK + OpenAIAgentsPlugin",
           "Pydantic AI + TemporalDurability")

ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("the workflow",
     "DurableAgentWorkflow: the agent loop itself, written out (workflow.py); a chat, an Update per message",
     "your class; its run() calls Runner.run(agent, ...): the SDK's loop runs in the workflow, with "
     "Temporal's runner swapped in by the plugin",
     "your class (PydanticAIWorkflow, listing its agents in __pydantic_ai_agents__); its run() calls "
     "agent.run(...): the agent graph runs in the workflow"),
    ("a model call",
     "the activity plan_next_action",
     "the activity invoke_model_activity (registered by the plugin)",
     "the activity agent__course_agent__model_request (registered by the plugin, named after the agent)"),
    ("a tool call",
     "the activity execute_tool, one type for every tool",
     "an activity only if you wrap it: activity_as_tool(calculator) is the activity calculator, and weather "
     "the activity weather, one type per tool; a plain @function_tool runs inside the workflow",
     "always an activity: agent__course_agent__toolset__<agent>__call_tool, one type per toolset (the tool's "
     "name is in its input); metadata {'temporal': False} keeps an async tool in the workflow"),
    ("retry policy, timeouts",
     "PLAN_ACTIVITY and TOOL_ACTIVITY in workflow.py, one per kind of call",
     "ModelActivityParameters, once, for every model call (default: 60 s, Temporal's default retries); "
     "each activity_as_tool(...) takes its own",
     "activity_config for all, model_activity_config on top; per toolset or per tool in metadata; "
     "model errors no retry can fix (rejected, quota, timeout) are made non-retryable by class"),
    ("heartbeats",
     "the model call and each tool heartbeat while they run",
     "the model activity heartbeats if you give heartbeat_timeout (none by default); your tool activities "
     "only if you write it",
     "every activity heartbeats in the background; model requests get a 30 s heartbeat_timeout by default"),
    ("payloads",
     "Temporal's default converter, dataclasses",
     "OpenAIPayloadConverter (Pydantic), set on the client by the plugin",
     "PydanticAIPayloadConverter, set on the client by the plugin"),
    ("left to you",
     "everything: that is what notebooks 01-07 taught",
     "the conversation (Updates, signals, queries, message ids, continue-as-new), tool activities and their "
     "options, turning the SDK's tracing off offline",
     "the conversation (Updates, signals, queries, message ids), when to continue as new (a handler you "
     "give), which tools must stay out of the workflow"),
)


@dataclass
class Comparison:
    """The side-by-side table: printed as text, shown as HTML in a notebook."""

    columns: tuple[str, ...] = COLUMNS
    rows: tuple[tuple[str, ...], ...] = ROWS

    def __str__(self) -> str:
        return "\n\n".join(f"{row[0].upper()}\n" + "\n".join(f"  {name}: {cell}" for name, cell in
                                                            zip(self.columns[1:], row[1:]))
                           for row in self.rows)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td style='text-align:left;vertical-align:top'>{html.escape(cell)}</td>"
                                        for cell in row) + "</tr>" for row in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def comparison() -> Comparison:
    return Comparison()
