// The latentforge page: a latent explorer over POST /sample and a webcam filter over the WebSocket.
// Plain browser APIs only (fetch, WebSocket, getUserMedia, canvas): no build step, nothing from a CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token");  // a server started with --token
const headers = token ? { Authorization: `Bearer ${token}` } : {};
let models = [];
let model = null;

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function sliders(container, onChange) {
  container.replaceChildren();
  for (const name of model.attributes) {
    const label = document.createElement("label");
    label.textContent = name + " ";
    const input = document.createElement("input");
    Object.assign(input, { type: "range", min: -3, max: 3, step: 0.1, value: 0, name });
    input.addEventListener("input", onChange);
    label.append(input);
    container.append(label);
  }
}

function edits(container) {
  const out = {};
  for (const input of container.querySelectorAll("input")) {
    if (Number(input.value) !== 0) out[input.name] = Number(input.value);
  }
  return out;
}

// Explorer: one request in flight; a change made meanwhile is sent when it returns, so the image follows
// the sliders without queueing a request per pixel of slider movement.
let busy = false;
let again = false;
let lastUrl = null;

async function draw() {
  if (!model) return;
  if (busy) { again = true; return; }
  busy = true;
  const body = { n: 1, seed: Number($("seed").value), temperature: Number($("temperature").value) };
  if (model.codebook_size) {
    body.top_k = Number($("top_k").value);
  } else {
    body.edits = edits($("sliders"));
    if (Number($("walk").value) > 0) body.walk = { to_seed: Number($("to_seed").value), t: Number($("walk").value) };
  }
  try {
    const r = await fetch(`/v1/models/${model.name}/sample`, {
      method: "POST", headers: { ...headers, "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (!r.ok) throw new Error((await r.json()).error);
    if (lastUrl) URL.revokeObjectURL(lastUrl);
    lastUrl = URL.createObjectURL(await r.blob());
    $("sample").src = lastUrl;
    status(`${model.name}: ${model.kind}, ${model.backend}`);
  } catch (e) {
    status(String(e.message || e), true);
  }
  busy = false;
  if (again) { again = false; draw(); }
}

// Webcam filter: frames go out as JPEG at most every 33 ms and only when the socket's buffer is empty; the
// server keeps the newest frame when it falls behind, so latency stays flat.
let socket = null;

function control() {
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({ edits: edits($("filter_sliders")), temperature: Number($("filter_temperature").value) }));
  }
}

async function startCamera() {
  const video = $("camera");
  try {
    video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 } });
  } catch (e) {
    status(`camera: ${e.message}`, true);
    return;
  }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  socket = new WebSocket(`${scheme}://${location.host}/v1/models/${model.name}/filter${query}`);
  socket.binaryType = "blob";
  const grab = document.createElement("canvas");
  const out = $("filtered").getContext("2d");
  socket.onopen = () => {
    control();
    setInterval(() => {
      if (socket.readyState !== WebSocket.OPEN || socket.bufferedAmount > 0 || !video.videoWidth) return;
      grab.width = video.videoWidth;
      grab.height = video.videoHeight;
      grab.getContext("2d").drawImage(video, 0, 0);
      grab.toBlob((blob) => blob && socket.send(blob), "image/jpeg", 0.8);
    }, 33);
  };
  socket.onmessage = async (event) => {
    if (typeof event.data === "string") {
      const message = JSON.parse(event.data);
      if (message.type === "stats") {
        $("stats").textContent = `fps ${message.fps} · latency p50 ${message.p50_ms} ms, p99 ${message.p99_ms} ms` +
          ` · dropped ${message.dropped}`;
      } else if (message.error) {
        status(message.error, true);
      }
      return;
    }
    const bitmap = await createImageBitmap(event.data);
    out.canvas.width = bitmap.width;
    out.canvas.height = bitmap.height;
    out.drawImage(bitmap, 0, 0);
    out.canvas.dataset.frames = String(Number(out.canvas.dataset.frames || 0) + 1);
  };
  socket.onclose = (event) => status(`filter stream closed (${event.code})`, event.code !== 1000);
}

function choose() {
  model = models.find((m) => m.name === $("model").value);
  for (const element of document.querySelectorAll(".vq")) element.classList.toggle("hidden", !model.codebook_size);
  sliders($("sliders"), draw);
  sliders($("filter_sliders"), control);
  $("start").disabled = !model.can_filter;
  draw();
}

async function init() {
  try {
    const r = await fetch("/v1/models", { headers });
    if (!r.ok) throw new Error((await r.json()).error);
    models = (await r.json()).models;
  } catch (e) {
    status(String(e.message || e), true);
    return;
  }
  $("model").replaceChildren(...models.map((m) => new Option(m.name, m.name)));
  $("model").addEventListener("change", choose);
  for (const id of ["seed", "temperature", "to_seed", "walk", "top_k"]) $(id).addEventListener("input", draw);
  $("filter_temperature").addEventListener("input", control);
  $("start").addEventListener("click", startCamera);
  choose();
}

init();
