"""Reads pseudo streams (and one real stream) with the official SDKs' stream readers.

Run by tests/sdk_streams.rs: argv[1] is a JSON object naming the servers to read from
({"plain": url, "chunk": url, "optimized": url, "gemini_comment": url}). Prints one JSON object
with what each SDK parsed; the Rust test asserts on it. Errors raised by the SDKs are recorded,
not raised, so that every scenario is reported.
"""

import json
import sys
from concurrent.futures import ThreadPoolExecutor

import openai
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

SERVERS = json.loads(sys.argv[1])
MESSAGES = [{"role": "user", "content": "hi"}]


def openai_client(base):
    return openai.OpenAI(base_url=base + "/v1", api_key="test-key", max_retries=0, timeout=30)


def openai_stream(base, model):
    got = {"content": "", "reasoning": "", "tool_calls": {}, "finish_reasons": [],
           "usage": None, "roles": [], "chunks": 0}
    try:
        stream = openai_client(base).chat.completions.create(
            model=model, messages=MESSAGES, stream=True,
            stream_options={"include_usage": True})
        for chunk in stream:
            got["chunks"] += 1
            if chunk.usage is not None:
                got["usage"] = chunk.usage.model_dump(exclude_none=True)
            for choice in chunk.choices:
                delta = choice.delta
                if delta.role:
                    got["roles"].append(delta.role)
                if delta.content:
                    got["content"] += delta.content
                reasoning = (delta.model_extra or {}).get("reasoning_content")
                if reasoning:
                    got["reasoning"] += reasoning
                for call in delta.tool_calls or []:
                    entry = got["tool_calls"].setdefault(
                        str(call.index), {"id": None, "name": "", "arguments": ""})
                    if call.id:
                        entry["id"] = call.id
                    if call.function and call.function.name:
                        entry["name"] += call.function.name
                    if call.function and call.function.arguments:
                        entry["arguments"] += call.function.arguments
                if choice.finish_reason:
                    got["finish_reasons"].append(choice.finish_reason)
    except openai.APIError as error:
        got["error"] = {"type": type(error).__name__, "message": error.message,
                        "body": error.body}
    return got


def openai_helper(base, model):
    """The SDK's accumulating helper, stricter about the chunk sequence."""
    try:
        with openai_client(base).chat.completions.stream(model=model, messages=MESSAGES) as stream:
            final = stream.get_final_completion()
        choice = final.choices[0]
        return {"content": choice.message.content, "finish_reason": choice.finish_reason,
                "tool_calls": [[c.function.name, c.function.arguments]
                               for c in choice.message.tool_calls or []]}
    except Exception as error:  # noqa: BLE001 - reported to the Rust test
        return {"error": {"type": type(error).__name__, "message": str(error)}}


def gemini_stream(base, model):
    client = genai.Client(api_key="test-key",
                          http_options=types.HttpOptions(base_url=base, api_version="v1beta"))
    got = {"thoughts": "", "text": "", "function_calls": [], "finish_reasons": [],
           "usage": None, "chunks": 0}
    try:
        for chunk in client.models.generate_content_stream(model=model, contents="hi"):
            got["chunks"] += 1
            if chunk.usage_metadata is not None and chunk.usage_metadata.total_token_count:
                got["usage"] = chunk.usage_metadata.model_dump(exclude_none=True, mode="json")
            for candidate in chunk.candidates or []:
                if candidate.finish_reason:
                    got["finish_reasons"].append(str(candidate.finish_reason.value))
                parts = candidate.content.parts if candidate.content else None
                for part in parts or []:
                    if part.text:
                        if part.thought:
                            got["thoughts"] += part.text
                        else:
                            got["text"] += part.text
                    if part.function_call:
                        got["function_calls"].append(
                            {"name": part.function_call.name, "args": part.function_call.args})
    except genai_errors.APIError as error:
        got["error"] = {"type": type(error).__name__, "code": error.code,
                        "status": error.status, "message": error.message}
    except Exception as error:  # noqa: BLE001 - reported to the Rust test
        got["error"] = {"type": type(error).__name__, "message": str(error)[:300]}
    return got


def main():
    jobs = {}
    with ThreadPoolExecutor(max_workers=16) as pool:
        for server in ("plain", "chunk", "optimized"):
            base = SERVERS[server]
            for model in ("thinker", "tool-caller", "failing"):
                jobs[("openai", server, model)] = pool.submit(openai_stream, base, model)
                jobs[("gemini", server, model)] = pool.submit(gemini_stream, base, model)
            for model in ("thinker", "tool-caller"):
                jobs[("openai_helper", server, model)] = pool.submit(openai_helper, base, model)
        base = SERVERS["optimized"]
        jobs[("openai", "optimized", "real-streamer")] = pool.submit(openai_stream, base, "real-streamer")
        jobs[("gemini", "optimized", "real-streamer")] = pool.submit(gemini_stream, base, "real-streamer")
        jobs[("gemini", "gemini_comment", "thinker")] = pool.submit(
            gemini_stream, SERVERS["gemini_comment"], "thinker")
    report = {}
    for (sdk, server, model), job in jobs.items():
        report.setdefault(sdk, {}).setdefault(server, {})[model] = job.result()
    report["versions"] = {"openai": openai.__version__, "google-genai": genai.__version__}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
