"""A bare FastAPI echo endpoint: the floor any Python HTTP front adds (for bench/run.py gateway)."""
import sys

import uvicorn
from fastapi import FastAPI, Request

app = FastAPI()


@app.post("/echo")
async def echo(request: Request):
    return await request.json()


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
