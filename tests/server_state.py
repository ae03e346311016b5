"""Waiting on what the Temporal server says, instead of sleeping for a guessed time."""

from __future__ import annotations

import asyncio

from temporalio.client import WorkflowHandle


async def until_a_workflow_task_waits(handle: WorkflowHandle) -> None:
    """Return once the server holds a workflow task for `handle` that no worker has taken yet: a message
    (an Update) sent with no worker running has reached the server, which now waits for a worker."""
    while not (await handle.describe()).raw_description.HasField("pending_workflow_task"):
        await asyncio.sleep(0.02)
