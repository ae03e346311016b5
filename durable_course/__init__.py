"""durable_course: the machinery that runs the course around the agent in `durable_agent/`.

Nothing here is part of the agent; the agent imports nothing from here (tests/test_layers.py checks it).

- `lab.py`: `start_lab()`, a notebook's Temporal server and in-kernel worker.
- `chat.py`: the ipywidgets chat box; `history.py`: a chat's event history as a table and a timeline.
- `events.py`: the one reader of event histories, and the one replay helper.
- `faults.py`: the fault lab (notebook 05), plugged into a worker from outside as a Temporal worker plugin.
- `checks.py`: the exercises' checks; `exercises.py`: exercises generated from their solutions, and grading.
- `bench.py`: what durability costs per turn; `load.py`: many chats at once.
- `notebooks.py`: refresh the committed notebooks and keep them clean; `cli.py`: the `durable-agent` command.
"""
