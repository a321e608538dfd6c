// The rtc-broker console (SPEC section 11): issue a token, join a room over
// WebSocket (presence, messages, reconnect with resume), record a camera,
// the screen or a canvas with MediaRecorder streamed over the recording
// WebSocket, then play and download the merged file.
//
// Plain browser JavaScript, no framework and no build step, so it can be
// read and changed as it is served. It talks only to the broker that served
// it (the page's Content-Security-Policy allows nothing else).
// `window.rtcConsole` is a read-only view of the state for people poking
// at the page from the developer tools, and for the tests (tests/console).
//
// This module is the page's entry (a module script: strict, deferred):
// the broker line and the token panel here, the room, recording and clock
// in their own modules.

import { $, api, setState } from './common.js';
import { startClock } from './clock.js';
import { recordingSnapshot, setupRecording } from './recording.js';
import { roomSnapshot, setupRoom, updateRoomButtons } from './room.js';

async function showBrokerInfo() {
  try {
    const health = await api('GET', '/api/health');
    let text = 'instance ' + health.server_id + ' · storage: ' + health.storage;
    if (health.redis) text += ' (Redis ' + health.redis.mode + ')';
    if (health.warnings && health.warnings.length) {
      text += ' · warnings: ' + health.warnings.join(', ');
    }
    $('broker-info').textContent = text;
  } catch (err) {
    $('broker-info').textContent = 'health check failed: ' + err.message;
  }
}

// --------------------------------------------------------------- token

/** The last token issued: the broker's answer. */
let token = null;

function tokenRequest() {
  const body = { session_id: $('session-id').value.trim() };
  const identity = $('identity').value.trim();
  const room = $('room').value.trim();
  const ttl = $('ttl').value.trim();
  if (identity) body.identity = identity;
  if (room) body.room = room;
  if (ttl) body.ttl_seconds = Number(ttl);
  return body;
}

async function issueToken(event) {
  event.preventDefault();
  const output = $('token-output');
  setState(output, 'pending', 'Issuing…');
  try {
    token = await api('POST', '/api/voice/token', tokenRequest());
  } catch (err) {
    setState(output, 'error', 'Not issued: ' + err.message);
    return;
  }
  const expires = new Date(token.expires_at * 1000).toLocaleTimeString();
  setState(output, 'issued', 'Token for ' + token.identity + ' in room ' + token.room +
    ' (session ' + token.session_id + '), expires at ' + expires + '.');
  const code = document.createElement('code');
  code.textContent = token.rtc_token;
  output.appendChild(code);
  updateRoomButtons();
}

/**
 * A fresh token for the room panel's refresh: the same session, identity
 * and room as the last one, the TTL the form asks for.
 */
async function renewToken() {
  if (token === null) return null;
  const body = { session_id: token.session_id, identity: token.identity, room: token.room };
  const ttl = $('ttl').value.trim();
  if (ttl) body.ttl_seconds = Number(ttl);
  token = await api('POST', '/api/voice/token', body);
  return token;
}

// -------------------------------------------------------- status object

Object.defineProperty(window, 'rtcConsole', {
  value: Object.freeze({
    get token() {
      return token && {
        session_id: token.session_id, identity: token.identity, room: token.room,
        expires_at: token.expires_at,
      };
    },
    get room() { return roomSnapshot(); },
    get recording() { return recordingSnapshot(); },
  }),
});

$('token-form').addEventListener('submit', issueToken);
setupRoom(() => token, renewToken);
setupRecording();
startClock();
showBrokerInfo();
