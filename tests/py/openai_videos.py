"""The `openai` package's videos resource pointed at vidflow's HTTP API,
used exactly as its documentation shows: create, poll, list, download,
then an image-to-video job with a file, then delete. Prints one JSON line
of what it saw; tests/openai_client.rs checks it.

    python openai_videos.py BASE_URL API_KEY OUT_DIR
"""
import io
import json
import sys

import openai

base, key, out = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=120)

seen = {"openai": openai.__version__}
video = client.videos.create(
    model="ltx-tiny",
    prompt="a paper boat drifting on a pond",
    seconds="1",
    size="256x256",
    extra_body={"steps": 2, "mode": "realtime"},
)
seen["created"] = {"id": video.id, "object": video.object, "status": video.status}
video = client.videos.poll(video.id, poll_interval_ms=200)
seen["polled"] = {"status": video.status, "progress": video.progress, "size": video.size,
                  "seconds": video.seconds, "model": video.model}
page = client.videos.list(limit=10)
seen["listed"] = [v.id for v in page.data]
content = client.videos.download_content(video.id, variant="video")
path = out + "/openai.mp4"
content.write_to_file(path)
seen["downloaded"] = path
thumb = client.videos.download_content(video.id, variant="thumbnail")
seen["thumbnail_bytes"] = len(thumb.read())

# Image-to-video: the file goes as a multipart part named input_reference.
png = open(sys.argv[4], "rb").read() if len(sys.argv) > 4 else None
if png:
    i2v = client.videos.create_and_poll(
        model="ltx-tiny",
        prompt="the same picture, slowly moving",
        seconds="1",
        size="256x256",
        input_reference=("first.png", io.BytesIO(png), "image/png"),
        extra_body={"steps": "2", "mode": "realtime"},
        poll_interval_ms=200,
    )
    seen["i2v"] = {"id": i2v.id, "status": i2v.status}

deleted = client.videos.delete(video.id)
seen["deleted"] = {"id": deleted.id, "deleted": deleted.deleted, "object": deleted.object}
try:
    client.videos.retrieve("no-such-video")
    seen["missing"] = "found?"
except openai.NotFoundError as e:
    seen["missing"] = e.status_code
try:
    openai.OpenAI(base_url=base + "/v1", api_key="vf_wrong", max_retries=0).videos.list()
    seen["bad_key"] = "accepted?"
except openai.AuthenticationError as e:
    seen["bad_key"] = e.status_code
print(json.dumps(seen))
