"""The travel planner: Perennial's reference application (`--app examples.travel`).

Agent types, each in its own module, registered when this package is imported:

- `scraper` (scraper.py): fetches and reads web pages for the other agents, politely and
  behind an SSRF guard (ssrf.py).
- `travel` (travel.py): plans a session's trip: slots, searches, itinerary, bookings after a
  person approves, reminders.
- `conversation` and `trip_notes` (conversation.py): a session's conversation, which routes
  each message to a specialist, and the traveller's notes.
- `session` (session.py): creates sessions, expires idle ones and cleans up their agents.

Their settings (model, tools, limits) come from agents.toml, through the agent factory
(factory.py). The module also defines Perennial's application hooks: `gateway_routes` (the
HTTP service, service.py, and the planner's page, static/), `dev_services` and `demo`
(showcase.py: the local provider server for `perennial dev`, the demo's travel section).

The providers' activity tools (flights, hotels, weather, attractions, web search) are in
providers.py; provider_server.py is a local server that speaks the providers' API shapes, for
the tests and the offline demo.
"""

from temporalio import workflow

# Passed through Temporal's sandbox: the sandbox runs every agent's workflow code inside, and
# would otherwise import this package (providers, pages, the HTTP service) again per agent.
with workflow.unsafe.imports_passed_through():
    from examples.travel import conversation, scraper, session, travel  # noqa: F401  (agent types)
    from examples.travel.service import gateway_routes
    from examples.travel.showcase import demo, dev_services

#: The planner's modules are deterministic where they run as workflow code: the worker's
#: sandbox may import them once and share them between agents (Perennial's hook).
passthrough_modules = ("examples.travel",)

__all__ = ["demo", "dev_services", "gateway_routes", "passthrough_modules"]
