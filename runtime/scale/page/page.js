// The depth page: POST the picked image and caption to /depth?format=json, colour the metric
// depth with the turbo map over the range the service reports, read metres under a click.
"use strict";

const $ = (id) => document.getElementById(id);
let depth = null;  // {width, height, values: Float32Array} in metres

// The service's colour table (turbo, uint8 [256][3], index 255 = near), from GET info.
let lut = null;

// Near is red, far is blue, linear in metres, clipped to [lo, hi]; invalid depth is black.
function colourOf(metres, lo, hi) {
  if (!(metres > 0) || !isFinite(metres)) return [0, 0, 0];
  const index = Math.round(((hi - metres) / (hi - lo)) * 255);
  return lut[Math.min(255, Math.max(0, index))];
}

// A .npy file holding float32 [H, W] (little-endian, C order), as the service writes it.
function parseNpy(buffer) {
  const bytes = new Uint8Array(buffer);
  const headerLen = bytes[8] | (bytes[9] << 8);
  const header = new TextDecoder().decode(bytes.subarray(10, 10 + headerLen));
  const shape = header.match(/'shape': \((\d+), (\d+)\)/);
  if (!header.includes("'<f4'") || !shape) throw new Error("unexpected depth array: " + header);
  const values = new Float32Array(buffer.slice(10 + headerLen));
  return { height: +shape[1], width: +shape[2], values };
}

function base64Bytes(text) {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

function drawDepth(lo, hi) {
  const canvas = $("depth");
  canvas.width = depth.width;
  canvas.height = depth.height;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(depth.width, depth.height);
  for (let i = 0; i < depth.values.length; i++) {
    const [r, g, b] = colourOf(depth.values[i], lo, hi);
    img.data.set([r, g, b, 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
}

function drawLegend(lo, hi, ticks) {
  const bar = $("legend-bar");
  const ctx = bar.getContext("2d");
  for (let y = 0; y < bar.height; y++) {  // far (hi) at the top
    const [r, g, b] = colourOf(hi - (y / (bar.height - 1)) * (hi - lo), lo, hi);
    ctx.fillStyle = `rgb(${r},${g},${b})`;
    ctx.fillRect(0, y, bar.width, 1);
  }
  const box = $("ticks");
  box.replaceChildren(...ticks.map((t) => {
    const label = document.createElement("span");
    label.textContent = `${+t.toPrecision(6)} m`;
    label.style.top = `${((hi - t) / (hi - lo)) * 100}%`;
    return label;
  }));
}

function readPixel(event) {
  if (!depth) return;
  const canvas = $("depth");
  const rect = canvas.getBoundingClientRect();
  const x = Math.min(depth.width - 1, Math.floor(((event.clientX - rect.left) / rect.width) * depth.width));
  const y = Math.min(depth.height - 1, Math.floor(((event.clientY - rect.top) / rect.height) * depth.height));
  const metres = depth.values[y * depth.width + x];
  $("readout").textContent = metres > 0 ? `(${x}, ${y}): ${metres.toFixed(3)} m` : `(${x}, ${y}): no depth`;
  $("readout").dataset.x = x;
  $("readout").dataset.y = y;
  $("readout").dataset.metres = metres;
}

function say(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function estimate(event) {
  event.preventDefault();
  const file = $("image").files[0];
  if (!file) return say("Pick an image first.", true);
  $("photo").src = URL.createObjectURL(file);
  say("Estimating...");
  const query = new URLSearchParams({ caption: $("caption").value, format: "json" });
  let answer;
  try {
    const response = await fetch(`depth?${query}`, { method: "POST", body: file });
    answer = await response.json();
    if (!response.ok) return say(`The service refused: ${answer.error}`, true);
  } catch (err) {
    return say(`Cannot reach the service: ${err}`, true);
  }
  depth = parseNpy(base64Bytes(answer.npy_base64).buffer);
  const [lo, hi] = answer.display_range_m;
  drawDepth(lo, hi);
  drawLegend(lo, hi, answer.legend_ticks_m);
  const png = new Blob([base64Bytes(answer.png16_base64)], { type: "image/png" });
  $("download").href = URL.createObjectURL(png);
  $("download").hidden = false;
  const t = answer.timings_ms;
  $("timing").textContent = `model input ${answer.input_size.join("x")}, inference ${t.infer.toFixed(0)} ms, batch of ${answer.batch_size}`;
  say(`Depth ready (${depth.width}x${depth.height}); colours span ${lo} to ${hi} m. Click the depth to read metres.`);
  document.body.dataset.state = "done";
}

fetch("info").then((r) => r.json()).then((info) => {
  lut = info.colormap;
  $("run").disabled = false;
});
$("ask").addEventListener("submit", estimate);
$("depth").addEventListener("click", readPixel);
