"""Drives the proxy binary with the official SDKs, as their users would.

Run by examples/proxy/tests/sdk_clients.rs: argv[1] is a JSON object
{"url": "http://127.0.0.1:PORT", "token": "<client token>"}. Prints one JSON object with what
each SDK call returned; the Rust test asserts on it. Errors raised by the SDKs are recorded, not
raised, so that every scenario is reported.

Nothing may leave the machine: proxy variables are dropped and every socket connection to an
address other than loopback is refused and reported (`outside_connections`).
"""

import ipaddress
import json
import os
import socket
import sys
import traceback

for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ.pop(name, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
os.environ.pop("GOOGLE_GENAI_API_VERSION", None)  # the SDK's own default, below

OUTSIDE = []
_connect = socket.socket.connect


def _loopback_only(sock, address):
    host = address[0] if isinstance(address, tuple) else address
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not loopback:
        OUTSIDE.append(str(host))
        raise ConnectionRefusedError(f"the SDK test refuses to connect to {host}")
    return _connect(sock, address)


socket.socket.connect = _loopback_only

import openai  # noqa: E402 - after the guard
from google import genai  # noqa: E402
from google.genai import errors as genai_errors  # noqa: E402
from google.genai import types  # noqa: E402

ARGS = json.loads(sys.argv[1])
URL = ARGS["url"]
TOKEN = ARGS["token"]
CHAT_MODEL = "gemini-2.0-flash"
THINKING_MODEL = "gemini-2.5-flash"
SEARCH_MODEL = "gemini-2.5-flash-search"
EMBED_MODEL = "text-embedding-004"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city"}},
            "required": ["city"],
        },
    },
}


def scenario(fn):
    """Runs one scenario; an exception becomes its report."""
    try:
        return fn()
    except openai.APIStatusError as error:
        return {"error": {"type": type(error).__name__, "status": error.status_code,
                          "message": error.message, "body": error.body}}
    except genai_errors.APIError as error:
        return {"error": {"type": type(error).__name__, "code": error.code,
                          "status": error.status, "message": error.message}}
    except Exception as error:  # noqa: BLE001 - reported to the Rust test
        return {"error": {"type": type(error).__name__, "message": str(error)[:500],
                          "trace": traceback.format_exc()[-2000:]}}


# ---------------------------------------------------------------------------------------------
# google-genai


def genai_client(api_version, key=TOKEN):
    options = {"base_url": URL, "timeout": 30_000}
    if api_version is not None:
        options["api_version"] = api_version
    return genai.Client(api_key=key, http_options=types.HttpOptions(**options))


def usage_of(metadata):
    return None if metadata is None else metadata.model_dump(exclude_none=True, mode="json")


def genai_generate(client):
    response = client.models.generate_content(model=CHAT_MODEL, contents="hello from genai")
    candidate = response.candidates[0]
    return {"text": response.text, "finish_reason": str(candidate.finish_reason.value),
            "usage": usage_of(response.usage_metadata), "model_version": response.model_version}


def genai_stream(client):
    got = {"text": "", "chunks": 0, "finish_reasons": [], "usage": None}
    for chunk in client.models.generate_content_stream(model=CHAT_MODEL,
                                                       contents="stream from genai please"):
        got["chunks"] += 1
        got["text"] += chunk.text or ""
        for candidate in chunk.candidates or []:
            if candidate.finish_reason:
                got["finish_reasons"].append(str(candidate.finish_reason.value))
        if chunk.usage_metadata is not None and chunk.usage_metadata.total_token_count:
            got["usage"] = usage_of(chunk.usage_metadata)
    return got


def genai_tools(client):
    declaration = types.FunctionDeclaration(
        name="get_weather", description="The weather in a city",
        parameters=types.Schema(type="OBJECT", properties={"city": types.Schema(type="STRING")},
                                required=["city"]))
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[declaration])])
    response = client.models.generate_content(model=CHAT_MODEL, contents="weather in Paris",
                                              config=config)
    return {"function_calls": [{"name": c.name, "args": c.args}
                               for c in response.function_calls or []],
            "finish_reason": str(response.candidates[0].finish_reason.value)}


def genai_count_tokens(client):
    return {"total_tokens": client.models.count_tokens(
        model=CHAT_MODEL, contents="one two three four five").total_tokens}


def genai_embed(client):
    result = client.models.embed_content(model=EMBED_MODEL,
                                         contents=["first text", "the second text"])
    return {"embeddings": [e.values for e in result.embeddings]}


def genai_models(client):
    names = [m.name for m in client.models.list()]
    model = client.models.get(model="gemini-2.5-flash")
    return {"names": names, "get": {"name": model.name, "display_name": model.display_name,
                                    "input_token_limit": model.input_token_limit,
                                    "output_token_limit": model.output_token_limit}}


def genai_search(client):
    """A -search model: the sources follow the answer's text, whole and streamed."""
    response = client.models.generate_content(model=SEARCH_MODEL, contents="news today")
    metadata = response.candidates[0].grounding_metadata
    streamed = "".join(chunk.text or "" for chunk in client.models.generate_content_stream(
        model=SEARCH_MODEL, contents="news today"))
    return {"text": response.text, "streamed": streamed,
            "grounding_chunks": 0 if metadata is None else len(metadata.grounding_chunks or [])}


def genai_bad_token():
    client = genai_client("v1beta", key="not-a-token")  # held: a dropped client closes
    client.models.generate_content(model=CHAT_MODEL, contents="x")
    return {"no_error": True}


# ---------------------------------------------------------------------------------------------
# openai


def openai_client(key=TOKEN):
    return openai.OpenAI(base_url=URL + "/v1", api_key=key, max_retries=0, timeout=30)


def openai_chat():
    completion = openai_client().chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "hello from openai"}])
    choice = completion.choices[0]
    return {"content": choice.message.content, "role": choice.message.role,
            "finish_reason": choice.finish_reason, "model": completion.model,
            "object": completion.object, "usage": completion.usage.model_dump(exclude_none=True)}


def read_chat_stream(stream):
    got = {"content": "", "roles": [], "finish_reasons": [], "tool_calls": {}, "chunks": 0,
           "usage_chunks": [], "usage_is_last": None}
    for chunk in stream:
        got["chunks"] += 1
        if chunk.usage is not None:
            got["usage_chunks"].append({"usage": chunk.usage.model_dump(exclude_none=True),
                                        "choices": len(chunk.choices)})
            got["usage_is_last"] = True
        elif got["usage_chunks"]:
            got["usage_is_last"] = False
        for choice in chunk.choices:
            delta = choice.delta
            if delta.role:
                got["roles"].append(delta.role)
            if delta.content:
                got["content"] += delta.content
            for call in delta.tool_calls or []:
                entry = got["tool_calls"].setdefault(str(call.index),
                                                     {"id": None, "name": "", "arguments": ""})
                if call.id:
                    entry["id"] = call.id
                if call.function and call.function.name:
                    entry["name"] += call.function.name
                if call.function and call.function.arguments:
                    entry["arguments"] += call.function.arguments
            if choice.finish_reason:
                got["finish_reasons"].append(choice.finish_reason)
    return got


def openai_stream(include_usage):
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    return read_chat_stream(openai_client().chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "stream from openai please"}],
        stream=True, **extra))


def openai_tools():
    """A whole tool round: the call, then the answer once the tool's result is sent back."""
    client = openai_client()
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model=CHAT_MODEL, messages=messages,
                                           tools=[WEATHER_TOOL], tool_choice="auto")
    choice = first.choices[0]
    calls = choice.message.tool_calls or []
    got = {"finish_reason": choice.finish_reason, "content": choice.message.content,
           "tool_calls": [{"id": c.id, "type": c.type, "name": c.function.name,
                           "arguments": json.loads(c.function.arguments)} for c in calls]}
    if not calls:
        return got
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": calls[0].id,
                     "content": json.dumps({"sky": "clear", "celsius": 21})})
    second = client.chat.completions.create(model=CHAT_MODEL, messages=messages,
                                            tools=[WEATHER_TOOL])
    got["after_result"] = {"content": second.choices[0].message.content,
                           "finish_reason": second.choices[0].finish_reason,
                           "tool_calls": len(second.choices[0].message.tool_calls or [])}
    return got


def openai_tools_stream():
    return read_chat_stream(openai_client().chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "weather in Rome"}],
        tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True, stream_options={"include_usage": True}))


def openai_reasoning():
    """A model that thinks: its thoughts in reasoning_content (an extra field the SDK keeps)."""
    client = openai_client()
    messages = [{"role": "user", "content": "why is the sky blue"}]
    message = client.chat.completions.create(model=THINKING_MODEL, messages=messages).choices[0].message
    reasoning, content = "", ""
    for chunk in client.chat.completions.create(model=THINKING_MODEL, messages=messages,
                                                stream=True):
        for choice in chunk.choices:
            reasoning += getattr(choice.delta, "reasoning_content", None) or ""
            content += choice.delta.content or ""
    return {"content": message.content,
            "reasoning_content": getattr(message, "reasoning_content", None),
            "streamed": {"content": content, "reasoning_content": reasoning}}


def openai_search():
    """A -search model, and Cherry Studio's search switch (a function named googleSearch)."""
    client = openai_client()
    messages = [{"role": "user", "content": "news today"}]
    whole = client.chat.completions.create(model=SEARCH_MODEL, messages=messages)
    streamed = read_chat_stream(client.chat.completions.create(
        model=SEARCH_MODEL, messages=messages, stream=True))
    cherry = client.chat.completions.create(model=CHAT_MODEL, messages=messages, tools=[{
        "type": "function",
        "function": {"name": "googleSearch", "description": "Search the web",
                     "parameters": {"type": "object", "properties": {}}}}])
    return {"content": whole.choices[0].message.content, "streamed": streamed["content"],
            "finish_reasons": streamed["finish_reasons"],
            "cherry": {"content": cherry.choices[0].message.content,
                       "tool_calls": len(cherry.choices[0].message.tool_calls or [])}}


def openai_embeddings():
    response = openai_client().embeddings.create(model=EMBED_MODEL,
                                                 input=["first text", "the second text"])
    return {"object": response.object, "model": response.model,
            "data": [{"index": d.index, "embedding": list(d.embedding)} for d in response.data]}


def openai_models():
    return {"ids": [m.id for m in openai_client().models.list()]}


def openai_bad_token():
    client = openai_client(key="not-a-token")
    client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "x"}])
    return {"no_error": True}


def main():
    report = {"genai": {}}
    # The SDK's default API version (v1 since google-genai 1.x), then v1beta explicitly.
    for label, version in (("default", None), ("v1beta", "v1beta")):
        client = genai_client(version)
        report["genai"][label] = {
            "api_version": client._api_client._http_options.api_version,
            "generate": scenario(lambda: genai_generate(client)),
            "stream": scenario(lambda: genai_stream(client)),
            "tools": scenario(lambda: genai_tools(client)),
            "count_tokens": scenario(lambda: genai_count_tokens(client)),
            "embed": scenario(lambda: genai_embed(client)),
            "models": scenario(lambda: genai_models(client)),
            "search": scenario(lambda: genai_search(client)),
        }
    report["genai"]["bad_token"] = scenario(genai_bad_token)
    report["openai"] = {
        "chat": scenario(openai_chat),
        "stream": scenario(lambda: openai_stream(False)),
        "stream_usage": scenario(lambda: openai_stream(True)),
        "tools": scenario(openai_tools),
        "tools_stream": scenario(openai_tools_stream),
        "reasoning": scenario(openai_reasoning),
        "search": scenario(openai_search),
        "embeddings": scenario(openai_embeddings),
        "models": scenario(openai_models),
        "bad_token": scenario(openai_bad_token),
    }
    report["outside_connections"] = OUTSIDE
    report["versions"] = {"openai": openai.__version__, "google-genai": genai.__version__}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
