// The recording panel: the canvas, the camera or the screen recorded with
// MediaRecorder (1 s timeslice) and streamed as binary frames over the
// recording WebSocket (SPEC section 7); shows the chunks acknowledged, the
// merge's progress and state, then plays and links the merged file.

import { $, api, setState, socketUrl } from './common.js';

/** How long one recorder piece is: one chunk per second. */
const TIMESLICE_MS = 1000;

const rec = {
  state: 'idle',
  recordId: null,
  uploadToken: null,
  socket: null,
  recorder: null,
  stream: null,
  mimeType: null,
  chunksSent: 0,
  chunksAcked: 0,
  progress: 0,
  startedAt: null,
  startDelay: null,
  recordedSeconds: null,
  downloadUrl: null,
  durationS: null,
  sizeBytes: null,
  error: null,
};

function recState(state, text) {
  rec.state = state;
  setState($('recording-state'), state, text || state);
  const busy = state === 'starting' || state === 'recording' || state === 'stopping';
  $('start-recording').disabled = busy || state === 'merging';
  $('stop-recording').disabled = state !== 'recording';
  $('record-source').disabled = busy;
}

function renderRecording() {
  $('chunks-acked').textContent = rec.chunksAcked + ' of ' + rec.chunksSent + ' sent';
  $('merge-progress').value = rec.progress;
  $('merge-percent').textContent = rec.state === 'idle' ? '–' : rec.progress + ' %';
  $('recording-state').dataset.recordedSeconds =
    rec.recordedSeconds === null ? '' : rec.recordedSeconds.toFixed(3);
}

function resetRecording() {
  Object.assign(rec, {
    recordId: null, uploadToken: null, socket: null, recorder: null, mimeType: null,
    chunksSent: 0, chunksAcked: 0, progress: 0, startedAt: null, startDelay: null,
    recordedSeconds: null,
    downloadUrl: null, durationS: null, sizeBytes: null, error: null,
  });
  $('download-link').hidden = true;
  $('player').removeAttribute('src');
  renderRecording();
}

function fail(message) {
  rec.error = message;
  recState('failed', 'failed: ' + message);
  stopTracks();
  renderRecording();
}

/** A MediaStream of the chosen source; shows it on the stage. */
async function openSource(kind) {
  const canvas = $('canvas-source');
  const preview = $('preview');
  if (kind === 'canvas') {
    canvas.hidden = false;
    preview.hidden = true;
    return canvas.captureStream(30);
  }
  const media = navigator.mediaDevices;
  if (!media) throw new Error('this page is not a secure context: no camera or screen');
  const stream = kind === 'screen'
    ? await media.getDisplayMedia({ video: true, audio: false })
    : await media.getUserMedia({ video: true, audio: true });
  preview.srcObject = stream;
  preview.hidden = false;
  canvas.hidden = true;
  preview.play().catch(() => {});
  return stream;
}

function stopTracks() {
  if (rec.stream) rec.stream.getTracks().forEach((track) => track.stop());
  rec.stream = null;
}

function pickMimeType(stream) {
  const video = ['vp8', 'vp9'];
  const codecs = stream.getAudioTracks().length > 0 ? video.map((v) => v + ',opus') : video;
  const types = codecs.map((c) => 'video/webm;codecs=' + c).concat(['video/webm']);
  return types.find((type) => MediaRecorder.isTypeSupported(type)) || '';
}

async function startRecording() {
  resetRecording();
  recState('starting', 'starting…');
  try {
    rec.stream = await openSource($('record-source').value);
    const session = $('session-id').value.trim();
    const started = await api('POST', '/api/recordings', session ? { session_id: session } : {});
    rec.recordId = started.record_id;
    rec.uploadToken = started.upload_token;
    $('recording-state').dataset.recordId = started.record_id;
    const socket = await openRecordingSocket(started.ws_url, started.upload_token);
    beginRecorder(rec.stream, socket);
  } catch (err) {
    fail(err.message || String(err));
  }
}

function openRecordingSocket(wsUrl, uploadToken) {
  const url = socketUrl(wsUrl);
  url.searchParams.set('token', uploadToken);
  const socket = new WebSocket(url);
  rec.socket = socket;
  socket.onmessage = (event) => onRecordingEvent(event.data);
  return new Promise((resolve, reject) => {
    socket.onopen = () => {
      socket.onclose = (event) => onRecordingClose(socket, event);
      resolve(socket);
    };
    socket.onclose = (event) => reject(new Error('the recording socket was refused (code ' +
      event.code + ')'));
  });
}

function beginRecorder(stream, socket) {
  rec.mimeType = pickMimeType(stream);
  const options = rec.mimeType ? { mimeType: rec.mimeType } : undefined;
  const recorder = new MediaRecorder(stream, options);
  rec.recorder = recorder;
  recorder.ondataavailable = (event) => {
    if (event.data.size === 0 || socket.readyState !== WebSocket.OPEN) return;
    socket.send(event.data);
    rec.chunksSent += 1;
    renderRecording();
  };
  // The media begins at start(); the start event follows once the
  // encoders are up (70-220 ms later with a camera), so the recorded time
  // counts from the call.
  recorder.onstart = () => {
    rec.startDelay = (performance.now() - rec.startedAt) / 1000;
    recState('recording', 'recording (' + (rec.mimeType || 'default type') + ', 1 s chunks)');
  };
  recorder.onstop = () => {
    rec.recordedSeconds = (performance.now() - rec.startedAt) / 1000;
    stopTracks();
    if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ event: 'stop' }));
    if (rec.state === 'recording') recState('stopping', 'stopping: last chunks…');
    renderRecording();
  };
  recorder.onerror = (event) => fail('recorder: ' + (event.error ? event.error.name : 'error'));
  rec.startedAt = performance.now();
  recorder.start(TIMESLICE_MS);
}

function stopRecording() {
  if (rec.recorder && rec.recorder.state !== 'inactive') rec.recorder.stop();
}

function onRecordingEvent(text) {
  let event;
  try {
    event = JSON.parse(text);
  } catch (_) {
    return;
  }
  if (event.event === 'chunkSaved') rec.chunksAcked += 1;
  else if (event.event === 'stopped') recState('merging', 'merging…');
  else if (event.event === 'mergeProgress') {
    rec.progress = event.progress;
    if (rec.state !== 'merging') recState('merging', 'merging…');
  } else if (event.event === 'recordingReady') {
    showReady(event.download_url, event.duration_s, event.size_bytes);
  } else if (event.event === 'recordingError') fail(event.error);
  else if (event.event === 'error') rec.error = event.error + ': ' + event.detail;
  renderRecording();
}

function onRecordingClose(socket, event) {
  if (socket !== rec.socket) return;
  rec.socket = null;
  if (rec.state === 'recording') {
    stopRecording();
    fail('the recording socket closed (code ' + event.code + ')');
  } else if (rec.state === 'stopping' || rec.state === 'merging') {
    pollStatus(); // the result is still told by the status call
  }
}

async function pollStatus() {
  while (rec.state === 'stopping' || rec.state === 'merging') {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    try {
      const status = await api('GET', '/api/recordings/' + rec.recordId + '/status',
        undefined, rec.uploadToken);
      rec.progress = status.progress || rec.progress;
      if (status.state === 'ready') {
        showReady(status.download_url, status.duration_s, status.size_bytes);
      } else if (status.state === 'failed') fail(status.error || 'merge failed');
      renderRecording();
    } catch (err) {
      fail(err.message);
    }
  }
}

function showReady(downloadUrl, durationS, sizeBytes) {
  Object.assign(rec, { downloadUrl, durationS, sizeBytes, progress: 100 });
  const kib = Math.round(sizeBytes / 1024);
  recState('ready', 'ready: ' + Number(durationS).toFixed(2) + ' s, ' + kib + ' KiB');
  const player = $('player');
  player.src = downloadUrl;
  player.load();
  const link = $('download-link');
  link.href = downloadUrl;
  link.download = rec.recordId + '.webm';
  link.hidden = false;
}

/** What the recording panel shows, for window.rtcConsole. */
export function recordingSnapshot() {
  return {
    state: rec.state, recordId: rec.recordId, mimeType: rec.mimeType,
    chunksSent: rec.chunksSent, chunksAcked: rec.chunksAcked, progress: rec.progress,
    recordedSeconds: rec.recordedSeconds, startDelaySeconds: rec.startDelay,
    downloadUrl: rec.downloadUrl, durationS: rec.durationS, sizeBytes: rec.sizeBytes,
    error: rec.error,
  };
}

/** Wires the panel's controls. */
export function setupRecording() {
  $('start-recording').addEventListener('click', startRecording);
  $('stop-recording').addEventListener('click', stopRecording);
  $('record-source').addEventListener('change', () => {
    const canvas = $('record-source').value === 'canvas';
    $('canvas-source').hidden = !canvas;
    $('preview').hidden = canvas;
  });
  renderRecording();
}
