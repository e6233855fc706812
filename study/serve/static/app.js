// The study serve page: upload or record a prompt, POST /generate, stream the continuation over the job's
// WebSocket into an AudioWorklet jitter buffer, draw waveform and spectrogram, offer the WAVs and manifest.
'use strict';

const $ = (id) => document.getElementById(id);
const FIELDS = ['prompt_seconds', 'seconds', 'temperature', 'top_p', 'seed', 'n'];
const state = { config: null, file: null, context: null, player: null, socket: null, job: null,
                prompt: new Float32Array(0), continuation: null, received: 0, firstFrameAt: null,
                spectrumColumn: 0, recording: null };
window.studyServe = { framesInWorklet: 0, samplesInWorklet: 0, ended: false, downloads: [] };

function token() { return $('token').value || sessionStorage.getItem('study-serve-token') || ''; }
function headers() { const t = token(); return t ? { Authorization: 'Bearer ' + t } : {}; }
function setStatus(text, error) { $('status').textContent = text; $('status').classList.toggle('error', !!error); }

async function loadConfig() {
  const response = await fetch('/config');
  state.config = await response.json();
  const c = state.config;
  $('model').textContent = `${c.experiment || c.checkpoint} · ${c.sample_rate} Hz · ${c.backend} · up to ${c.max_streams} streams`;
  $('token-label').hidden = !c.token_required;
  for (const name of FIELDS) if (c.ranges[name]) $(name).title = c.ranges[name];
}

// -- prompt ------------------------------------------------------------------------------------------
function choose(file) {
  state.file = file;
  $('drop-text').textContent = file ? `${file.name} (${(file.size / 1048576).toFixed(2)} MiB)` : 'Drop an audio file here or choose one';
  $('prompt-info').textContent = file ? 'prompt: ' + file.name : 'no prompt: unconditional';
}
$('file').addEventListener('change', (event) => choose(event.target.files[0] || null));
const drop = $('drop');
drop.addEventListener('dragover', (event) => { event.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (event) => {
  event.preventDefault(); drop.classList.remove('over');
  if (event.dataTransfer.files.length) choose(event.dataTransfer.files[0]);
});

async function audioContext() {
  if (!state.context) {
    state.context = new AudioContext({ sampleRate: state.config.sample_rate });
    await state.context.audioWorklet.addModule('/static/worklet.js');
  }
  if (state.context.state === 'suspended') await state.context.resume();
  return state.context;
}

function wavFile(samples, rate) {
  const buffer = new ArrayBuffer(44 + samples.length * 2), view = new DataView(buffer);
  const text = (offset, value) => { for (let i = 0; i < value.length; i++) view.setUint8(offset + i, value.charCodeAt(i)); };
  text(0, 'RIFF'); view.setUint32(4, 36 + samples.length * 2, true); text(8, 'WAVE'); text(12, 'fmt ');
  view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, rate * 2, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, 'data'); view.setUint32(40, samples.length * 2, true);
  for (let i = 0; i < samples.length; i++) view.setInt16(44 + i * 2, Math.max(-1, Math.min(1, samples[i])) * 32767, true);
  return new File([buffer], 'microphone.wav', { type: 'audio/wav' });
}

$('record').addEventListener('click', async () => {
  if (state.recording) {
    const { stream, node, blocks, rate } = state.recording;
    stream.getTracks().forEach((track) => track.stop()); node.disconnect();
    const length = blocks.reduce((sum, block) => sum + block.length, 0), samples = new Float32Array(length);
    let at = 0; for (const block of blocks) { samples.set(block, at); at += block.length; }
    state.recording = null; $('record').textContent = 'Record from microphone';
    choose(wavFile(samples, rate));
    return;
  }
  try {
    const context = await audioContext();
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const node = new AudioWorkletNode(context, 'recorder');
    const blocks = [];
    node.port.onmessage = (event) => blocks.push(event.data);
    context.createMediaStreamSource(stream).connect(node);
    state.recording = { stream, node, blocks, rate: context.sampleRate };
    $('record').textContent = 'Stop recording';
  } catch (error) { setStatus('microphone: ' + error.message, true); }
});

// -- drawing -----------------------------------------------------------------------------------------
function totalSamples() { return state.prompt.length + (state.job ? state.job.samples : 0); }
function xOf(sample, canvas) { return Math.floor(sample / Math.max(1, totalSamples()) * canvas.width); }

function drawWaveform() {
  const canvas = $('waveform'), g = canvas.getContext('2d'), h = canvas.height, total = totalSamples();
  g.fillStyle = '#0f1420'; g.fillRect(0, 0, canvas.width, h);
  if (!total) return;
  const perPixel = total / canvas.width;
  const column = (x) => {
    const from = Math.floor(x * perPixel), to = Math.floor((x + 1) * perPixel);
    let low = 0, high = 0, colour = null;
    for (let i = from; i < to; i++) {
      let v;
      if (i < state.prompt.length) { v = state.prompt[i]; colour = '#8a94a6'; }
      else if (i - state.prompt.length < state.received) { v = state.continuation[i - state.prompt.length]; colour = '#4d8cf5'; }
      else break;
      if (v < low) low = v; if (v > high) high = v;
    }
    if (colour) { g.fillStyle = colour; g.fillRect(x, h / 2 - high * h / 2, 1, Math.max(1, (high - low) * h / 2)); }
  };
  for (let x = 0; x < canvas.width; x++) column(x);
  marker(canvas, g);
}

function marker(canvas, g) {
  if (!state.prompt.length) return;
  const x = xOf(state.prompt.length, canvas);
  g.fillStyle = '#e0572a'; g.fillRect(x - 1, 0, 2, canvas.height);
}

const FFT_SIZE = 512;
function spectrumOf(samples) {  // magnitude in dB of a Hann-windowed radix-2 FFT
  const n = FFT_SIZE, re = new Float64Array(n), im = new Float64Array(n);
  for (let i = 0; i < n; i++) re[i] = (samples[i] || 0) * (0.5 - 0.5 * Math.cos(2 * Math.PI * i / n));
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1; for (; j & bit; bit >>= 1) j ^= bit; j ^= bit;
    if (i < j) { [re[i], re[j]] = [re[j], re[i]]; [im[i], im[j]] = [im[j], im[i]]; }
  }
  for (let size = 2; size <= n; size <<= 1) {
    const step = -2 * Math.PI / size;
    for (let start = 0; start < n; start += size) for (let k = 0; k < size / 2; k++) {
      const c = Math.cos(step * k), s = Math.sin(step * k), a = start + k, b = a + size / 2;
      const tr = re[b] * c - im[b] * s, ti = re[b] * s + im[b] * c;
      re[b] = re[a] - tr; im[b] = im[a] - ti; re[a] += tr; im[a] += ti;
    }
  }
  const out = new Float32Array(n / 2);
  for (let k = 0; k < n / 2; k++) out[k] = 20 * Math.log10(Math.hypot(re[k], im[k]) / n + 1e-7);
  return out;
}

function colourOf(db) {  // -100 dB .. -10 dB -> dark blue .. yellow
  const t = Math.max(0, Math.min(1, (db + 100) / 90));
  return `rgb(${Math.round(255 * Math.min(1, t * 1.6))},${Math.round(220 * t * t)},${Math.round(90 + 120 * (1 - t) * t)})`;
}

function sampleAt(i) {
  return i < state.prompt.length ? state.prompt[i] : state.continuation[i - state.prompt.length];
}

function drawSpectrogram(upTo) {  // columns from where the last call stopped up to sample `upTo`
  const canvas = $('spectrogram'), g = canvas.getContext('2d'), h = canvas.height, total = totalSamples();
  if (!total) return;
  const perColumn = total / canvas.width;
  for (; state.spectrumColumn < canvas.width; state.spectrumColumn++) {
    const centre = Math.floor((state.spectrumColumn + 0.5) * perColumn);
    if (centre + FFT_SIZE / 2 > upTo && upTo < total) break;
    const frame = new Float32Array(FFT_SIZE);
    for (let i = 0; i < FFT_SIZE; i++) { const at = centre - FFT_SIZE / 2 + i; frame[i] = at >= 0 && at < upTo ? sampleAt(at) : 0; }
    const spectrum = spectrumOf(frame);
    for (let y = 0; y < h; y++) {
      g.fillStyle = colourOf(spectrum[Math.floor((h - 1 - y) / h * spectrum.length)]);
      g.fillRect(state.spectrumColumn, y, 1, 1);
    }
  }
  marker(canvas, g);
}

function clearCanvases() {
  for (const id of ['waveform', 'spectrogram']) {
    const canvas = $(id), g = canvas.getContext('2d'); g.fillStyle = '#0f1420'; g.fillRect(0, 0, canvas.width, canvas.height);
  }
  state.spectrumColumn = 0;
}

let drawPending = false;
function redraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => { drawPending = false; drawWaveform(); drawSpectrogram(state.prompt.length + state.received); });
}

// -- playing -------------------------------------------------------------------------------------------
function settingsForm() {
  const form = new FormData();
  if (state.file) form.append('prompt', state.file, state.file.name);
  for (const name of FIELDS) if ($(name).value !== '') {
    if (name === 'prompt_seconds' && !state.file) continue;
    form.append(name, $(name).value);
  }
  return form;
}

function explain(body, status) {
  if (Array.isArray(body.detail)) return body.detail.map((d) => d.message || `${(d.loc || []).join('.')}: ${d.msg}`).join('; ');
  return body.detail || `HTTP ${status}`;
}

async function play() {
  if (token()) sessionStorage.setItem('study-serve-token', token());
  setStatus('uploading...');
  $('downloads').innerHTML = '<span class="muted">the WAVs and the manifest appear when a continuation ends</span>';
  window.studyServe.ended = false;
  const context = await audioContext();
  const response = await fetch('/generate', { method: 'POST', body: settingsForm(), headers: headers() });
  const body = await response.json();
  if (!response.ok) { setStatus(explain(body, response.status), true); return; }
  state.job = body;
  state.prompt = new Float32Array(0);
  state.continuation = new Float32Array(body.samples);
  state.received = 0; state.firstFrameAt = null; state.playStarted = performance.now();
  $('rtf').textContent = '-'; $('ttfa').textContent = '-';
  clearCanvases();
  if (state.player) state.player.disconnect();
  state.player = new AudioWorkletNode(context, 'player', { outputChannelCount: [1],
    processorOptions: { capacity: body.samples + context.sampleRate, prebuffer: Math.round(context.sampleRate * 0.3) } });
  state.player.connect(context.destination);
  state.player.port.onmessage = (event) => {
    const m = event.data;
    window.studyServe.framesInWorklet = m.frames; window.studyServe.samplesInWorklet = m.samples;
    $('frames').textContent = m.frames; $('frames').dataset.count = m.frames;
    $('buffered').textContent = (m.buffered / context.sampleRate).toFixed(1) + ' s';
  };
  $('play').disabled = true; $('stop').disabled = false;
  const query = token() ? '?token=' + encodeURIComponent(token()) : '';
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const socket = new WebSocket(`${scheme}://${location.host}/jobs/${body.id}/stream${query}`);
  socket.binaryType = 'arraybuffer';
  state.socket = socket;
  socket.onmessage = (event) => typeof event.data === 'string' ? onMessage(JSON.parse(event.data)) : onAudio(event.data);
  socket.onclose = () => { $('play').disabled = false; $('stop').disabled = true; };
  setStatus('waiting for the engine...');
}

function onAudio(buffer) {
  const header = new Int32Array(buffer, 0, 4), samples = new Float32Array(buffer, 16, header[3]);
  const [kind, stream, offset] = header;
  if (kind === 0) {
    const joined = new Float32Array(state.prompt.length + samples.length);
    joined.set(state.prompt); joined.set(samples, state.prompt.length); state.prompt = joined;
  } else if (stream === 0) {
    if (state.firstFrameAt === null) {
      state.firstFrameAt = performance.now();
      $('ttfa').textContent = ((state.firstFrameAt - state.playStarted) / 1000).toFixed(2) + ' s';
    }
    state.continuation.set(samples, offset);
    state.received = offset + samples.length;
    state.player.port.postMessage({ type: 'audio', samples: samples.slice() });
    const seconds = (performance.now() - state.firstFrameAt) / 1000;
    if (seconds > 0.2) $('rtf').textContent = (state.received / state.config.sample_rate / seconds).toFixed(2) + '×';
    setStatus(`playing · ${(state.received / state.config.sample_rate).toFixed(1)} of ${(state.job.samples / state.config.sample_rate).toFixed(1)} s generated`);
  }
  redraw();
}

function onMessage(message) {
  if (message.type === 'queued') setStatus(`queued: position ${message.position}`);
  else if (message.type === 'progress' && message.real_time_factor_per_stream)
    $('rtf').textContent = message.real_time_factor_per_stream.toFixed(2) + '×';
  else if (message.type === 'end') {
    state.player.port.postMessage({ type: 'end' });
    setStatus(message.status === 'done' ? 'done' : message.status + (message.error ? ': ' + message.error : ''),
              message.status === 'failed');
    if (message.status !== 'failed' && message.generated_samples > 0) showDownloads(message);
    window.studyServe.ended = true;
  }
}

function showDownloads(job) {
  const box = $('downloads');
  box.innerHTML = '';
  const links = [];
  for (let k = 0; k < job.streams; k++) {
    links.push([`/jobs/${job.id}/audio.wav?stream=${k}`, `variation ${k + 1}: prompt + continuation (WAV)`, `sample${k}.wav`]);
    links.push([`/jobs/${job.id}/audio.wav?stream=${k}&part=continuation`, `variation ${k + 1}: continuation (WAV)`, `sample${k}-continuation.wav`]);
  }
  links.push([`/jobs/${job.id}/manifest.json`, 'manifest (JSON)', 'manifest.json']);
  for (const [url, label, name] of links) {
    const a = document.createElement('a');
    a.href = url; a.textContent = label; a.download = name; a.dataset.url = url;
    a.addEventListener('click', async (event) => {   // fetch with the token, then save the blob
      event.preventDefault();
      const response = await fetch(url, { headers: headers() });
      if (!response.ok) { setStatus(`download failed: HTTP ${response.status}`, true); return; }
      const blob = await response.blob(), link = document.createElement('a');
      link.href = URL.createObjectURL(blob); link.download = name; document.body.appendChild(link); link.click();
      setTimeout(() => { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
    });
    box.appendChild(a);
  }
  window.studyServe.downloads = links.map(([url]) => url);
}

function stop() {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) state.socket.send(JSON.stringify({ type: 'stop' }));
  if (state.player) state.player.port.postMessage({ type: 'stop' });
  $('stop').disabled = true;
}

$('play').addEventListener('click', () => play().catch((error) => { setStatus(error.message, true); $('play').disabled = false; }));
$('stop').addEventListener('click', stop);
loadConfig().then(clearCanvases).catch((error) => setStatus('cannot reach the server: ' + error.message, true));
