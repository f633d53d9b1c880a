"""What the tests (and bench/) run the server against: nothing here is the product.

- app: settings without the environment, an ASGI client, a live uvicorn, wait_for, free_port
- frames: SSE read with a real parser; model_streams: streams for ScriptedModel
- fake_openai: an OpenAI-compatible upstream (Responses and Chat Completions) with faults
- postgrest_double, tcp_proxy: a Supabase (PostgREST) double and a proxy that cuts connections
- backends, session_backends: record and session stores on real SQLite, PostgreSQL and Redis
- processes, uvicorn_on_socket: `uvicorn api:app` as a real process, for signals and kills
- chatkit_client: a ChatKit protocol client built on chatkit's own types
"""
