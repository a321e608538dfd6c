// The room panel: joins the token's room over /ws/rooms/{room}?token=,
// shows presence and messages, and on an unexpected close reconnects with
// backoff and resumes with ?since=<last id>&epoch=<epoch> (SPEC section 6),
// telling the user that it did. Before the token expires it asks the page
// for a fresh one and sends it as {"type":"refresh"}; a close says why:
// 4001 (expired: a fresh token, then reconnect), 4003 (revoked) and 4004
// (kicked) end the stay for good, 1001 (the broker drains) reconnects.

import { $, setState, socketUrl } from './common.js';

/** Reconnect attempts before the page gives up on a room. */
const MAX_ATTEMPTS = 10;

/** The token to join with, and how to get a fresh one (set up by the page). */
let currentToken = () => null;
let renewToken = async () => null;

/** Refresh this long before the token expires (or at a third of its life). */
const REFRESH_AHEAD_MS = 30000;

/** Closes that end the stay in the room, and what the user is told. */
const FINAL_CLOSES = {
  4003: 'the token was revoked',
  4004: 'you were removed from the room (kicked)',
};

const room = {
  socket: null,
  name: null,
  token: null, // the RTC token this room was joined with
  memberId: null,
  epoch: null,
  lastId: 0,
  seen: new Set(),
  members: new Set(),
  wanted: false, // the user asked to be in the room
  joinedOnce: false,
  attempt: 0,
  timer: null,
  holdUntil: 0,
  reconnects: 0,
  resumedFrom: null,
  recovered: null,
  duplicates: 0,
  expiresAt: null, // unix seconds, from the welcome or the last refresh
  refreshTimer: null,
  pendingToken: null, // sent in a refresh, not yet confirmed
  refreshes: 0,
  closedBecause: null, // the last close's code and reason, as the user saw it
};

function roomStatus(state, text) {
  setState($('room-status'), state, text);
}

export function updateRoomButtons() {
  const open = room.socket !== null && room.socket.readyState === WebSocket.OPEN;
  $('join-room').disabled = currentToken() === null || room.wanted;
  $('leave-room').disabled = !room.wanted;
  $('drop-connection').disabled = !open;
  $('message-input').disabled = !open;
  $('send-message').disabled = !open;
}

function joinRoom() {
  const token = currentToken();
  if (token === null) return;
  Object.assign(room, {
    name: token.room, token: token.rtc_token, wanted: true, joinedOnce: false,
    epoch: null, lastId: 0, attempt: 0, reconnects: 0, resumedFrom: null,
    recovered: null, duplicates: 0, refreshes: 0, closedBecause: null, expiresAt: null,
  });
  room.seen.clear();
  $('messages').replaceChildren();
  connectRoom(false);
}

function connectRoom(resuming) {
  const query = new URLSearchParams({ token: room.token });
  if (resuming && room.epoch !== null) {
    query.set('since', String(room.lastId));
    query.set('epoch', room.epoch);
  }
  const url = socketUrl('/ws/rooms/' + encodeURIComponent(room.name) + '?' + query);
  const socket = new WebSocket(url);
  room.socket = socket;
  if (!resuming) roomStatus('connecting', 'Joining room ' + room.name + '…');
  socket.onopen = updateRoomButtons;
  socket.onmessage = (event) => onRoomFrame(event.data, resuming);
  socket.onclose = (event) => onRoomClose(socket, event);
  updateRoomButtons();
}

function onRoomFrame(text, resuming) {
  let frame;
  try {
    frame = JSON.parse(text);
  } catch (_) {
    return;
  }
  if (frame.type === 'welcome') onWelcome(frame, resuming);
  else if (frame.type === 'message') onMessage(frame);
  else if (frame.type === 'presence') onPresence(frame);
  else if (frame.type === 'refreshed') onRefreshed(frame);
  else if (frame.type === 'error') notice('error ' + frame.error + ': ' + frame.detail);
}

/** Asks for a fresh token a while before this one expires. */
function scheduleRefresh() {
  clearTimeout(room.refreshTimer);
  if (room.expiresAt === null) return;
  const left = room.expiresAt * 1000 - Date.now();
  const ahead = Math.min(REFRESH_AHEAD_MS, left / 3);
  room.refreshTimer = setTimeout(refreshToken, Math.max(0, left - ahead));
}

async function refreshToken() {
  room.refreshTimer = null;
  if (!room.socket || room.socket.readyState !== WebSocket.OPEN) return;
  let fresh;
  try {
    fresh = await renewToken();
  } catch (err) {
    notice('could not renew the token: ' + err.message);
    return;
  }
  if (!fresh || !room.socket || room.socket.readyState !== WebSocket.OPEN) return;
  room.pendingToken = fresh.rtc_token;
  room.socket.send(JSON.stringify({ type: 'refresh', token: fresh.rtc_token }));
}

function onRefreshed(frame) {
  if (room.pendingToken) room.token = room.pendingToken; // reconnects use it
  room.pendingToken = null;
  room.expiresAt = frame.expires_at;
  room.refreshes += 1;
  scheduleRefresh();
}

function onWelcome(frame, resuming) {
  const since = room.lastId;
  room.memberId = frame.member_id;
  room.members = new Set(frame.members);
  room.attempt = 0;
  renderPresence();
  if (resuming && room.epoch !== null) {
    room.reconnects += 1;
    room.resumedFrom = since;
    room.recovered = frame.recovered === true;
    const lost = room.recovered ? '' : ' — history did not reach back that far ' +
      '(recovered: false), some messages may be missing';
    roomStatus('resumed', 'Reconnected, resumed from id ' + since + lost + '.');
  } else {
    room.lastId = frame.last_id;
    roomStatus('joined', 'Joined room ' + frame.room + ' as ' + frame.member_id + '.');
  }
  room.epoch = frame.epoch;
  room.joinedOnce = true;
  room.expiresAt = frame.expires_at;
  scheduleRefresh();
  updateRoomButtons();
}

function onMessage(frame) {
  if (room.seen.has(frame.id)) {
    room.duplicates += 1;
    return;
  }
  room.seen.add(frame.id);
  room.lastId = Math.max(room.lastId, frame.id);
  const item = document.createElement('li');
  item.dataset.from = frame.from;
  item.dataset.id = String(frame.id);
  const from = document.createElement('span');
  from.className = 'from';
  from.textContent = frame.from;
  const text = document.createElement('span');
  text.className = 'text';
  const data = frame.data;
  text.textContent = data && typeof data.text === 'string' ? data.text : JSON.stringify(data);
  const id = document.createElement('span');
  id.className = 'id';
  id.textContent = '#' + frame.id;
  item.append(id, from, text);
  appendMessage(item);
}

function notice(text) {
  const item = document.createElement('li');
  item.className = 'notice';
  item.textContent = text;
  appendMessage(item);
}

function appendMessage(item) {
  const list = $('messages');
  list.appendChild(item);
  list.scrollTop = list.scrollHeight;
}

function onPresence(frame) {
  if (frame.event === 'join') room.members.add(frame.member_id);
  else if (frame.event === 'leave') room.members.delete(frame.member_id);
  renderPresence();
}

function renderPresence() {
  const items = [...room.members].sort().map((member) => {
    const item = document.createElement('li');
    item.dataset.member = member;
    item.textContent = member === room.memberId ? member + ' (you)' : member;
    if (member === room.memberId) item.className = 'me';
    return item;
  });
  $('presence').replaceChildren(...items);
}

function onRoomClose(socket, event) {
  if (socket !== room.socket) return; // an older socket
  room.socket = null;
  clearTimeout(room.refreshTimer);
  room.closedBecause = { code: event.code, reason: event.reason };
  updateRoomButtons();
  if (!room.wanted) return;
  if (FINAL_CLOSES[event.code]) {
    room.wanted = false;
    room.members.clear();
    renderPresence();
    roomStatus('ended', 'Closed by the broker (' + event.code + '): ' +
      FINAL_CLOSES[event.code] + '. Issue a new token to join again.');
    updateRoomButtons();
    return;
  }
  if (event.code === 4001) {
    renewAndReconnect(event);
    return;
  }
  if (!room.joinedOnce) {
    room.wanted = false;
    roomStatus('error', 'Could not join (code ' + event.code + '): the broker refused the ' +
      'handshake — an expired token, another room, or an origin it does not allow.');
    updateRoomButtons();
    return;
  }
  if (room.attempt >= MAX_ATTEMPTS) {
    room.wanted = false;
    roomStatus('error', 'Gave up reconnecting after ' + MAX_ATTEMPTS + ' attempts; ' +
      'issue a new token and join again.');
    updateRoomButtons();
    return;
  }
  scheduleReconnect(event);
}

/** The token expired before a refresh: a fresh one, then resume. */
async function renewAndReconnect(event) {
  try {
    const fresh = await renewToken();
    if (fresh) room.token = fresh.rtc_token;
  } catch (err) {
    room.wanted = false;
    roomStatus('error', 'The token expired (4001) and a fresh one could not be issued: ' +
      err.message);
    updateRoomButtons();
    return;
  }
  scheduleReconnect(event);
}

/** Backoff 0.5 s doubling to 10 s with jitter, or the simulated outage. */
function scheduleReconnect(event) {
  const backoff = Math.min(10000, 500 * 2 ** room.attempt) + Math.random() * 250;
  const delay = Math.max(backoff, room.holdUntil - Date.now());
  room.attempt += 1;
  const why = closeText(event);
  roomStatus('reconnecting', 'Connection lost (' + why + '); reconnecting in ' +
    (delay / 1000).toFixed(1) + ' s, resuming after id ' + room.lastId + '.');
  room.timer = setTimeout(() => {
    room.timer = null;
    if (room.wanted) connectRoom(true);
  }, delay);
}

/** A close as the user reads it. */
function closeText(event) {
  const known = {
    1001: 'the broker is going away or draining',
    1006: 'the connection dropped',
    1008: 'closed for a policy: too fast, or not reading',
    4001: 'the token expired',
  };
  const text = known[event.code] || event.reason || 'closed';
  return event.code + ' ' + text;
}

function leaveRoom() {
  room.wanted = false;
  clearTimeout(room.timer);
  clearTimeout(room.refreshTimer);
  room.timer = null;
  if (room.socket) room.socket.close(1000, 'left');
  room.socket = null;
  room.members.clear();
  renderPresence();
  roomStatus('left', 'Left room ' + room.name + '.');
  updateRoomButtons();
}

/**
 * Closes the socket like a network drop would, and stays away a while:
 * 3 s, or the button's `data-outage-ms` (the tests stretch it).
 */
function simulateOutage() {
  if (!room.socket) return;
  const outageMs = Number($('drop-connection').dataset.outageMs) || 3000;
  room.holdUntil = Date.now() + outageMs;
  room.socket.close(4000, 'simulated outage');
}

function sendMessage(event) {
  event.preventDefault();
  const input = $('message-input');
  const text = input.value;
  if (!text || !room.socket || room.socket.readyState !== WebSocket.OPEN) return;
  room.socket.send(JSON.stringify({ type: 'publish', data: { text } }));
  input.value = '';
}

/** What the room panel shows, for window.rtcConsole. */
export function roomSnapshot() {
  return {
    state: $('room-status').dataset.state, room: room.name, memberId: room.memberId,
    epoch: room.epoch, lastId: room.lastId, members: [...room.members].sort(),
    messages: room.seen.size, duplicates: room.duplicates, reconnects: room.reconnects,
    resumedFrom: room.resumedFrom, recovered: room.recovered,
    expiresAt: room.expiresAt, refreshes: room.refreshes, closedBecause: room.closedBecause,
  };
}

/**
 * Wires the panel's buttons; `token` returns the token to join with,
 * `renew` issues a fresh one for the same session, identity and room.
 */
export function setupRoom(token, renew) {
  currentToken = token;
  renewToken = renew;
  $('join-room').addEventListener('click', joinRoom);
  $('leave-room').addEventListener('click', leaveRoom);
  $('drop-connection').addEventListener('click', simulateOutage);
  $('message-form').addEventListener('submit', sendMessage);
  updateRoomButtons();
}
