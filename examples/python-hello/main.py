"""A minimal kl function in Python: POST {"name": "Ada"} as JSON and it says hello."""


def handler(event, context):
    """Greet the caller.

    `event` is the request body: a dict for a JSON body, a str for text, None when empty.
    `context` tells who is being called and for which request (context.request_id,
    context.method, context.path, context.query, context.headers, ...).

    Returning a dict sends it back as JSON. To choose the status code or headers, return
    {"statusCode": 201, "headers": {...}, "body": "..."} instead.
    """
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    return {"message": f"Hello, {name}!", "request_id": context.request_id}
