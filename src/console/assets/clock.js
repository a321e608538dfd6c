// The canvas source: an animated clock, so that a canvas recording has
// moving content (and a recording can be checked against the wall clock).

import { $ } from './common.js';

/** Draws an animated clock, so a canvas recording has moving content. */
function drawClock(canvas, frame) {
  const ctx = canvas.getContext('2d');
  const now = new Date();
  const { width, height } = canvas;
  const seconds = now.getSeconds() + now.getMilliseconds() / 1000;
  ctx.fillStyle = 'hsl(' + ((seconds * 6) % 360) + ', 45%, 22%)';
  ctx.fillRect(0, 0, width, height);
  const cx = 90;
  const cy = height / 2;
  const r = 70;
  ctx.strokeStyle = '#f2f5f9';
  ctx.lineWidth = 3;
  ctx.beginPath();
  ctx.arc(cx, cy, r, 0, 2 * Math.PI);
  ctx.stroke();
  const hand = (turns, length, widthPx, colour) => {
    const angle = turns * 2 * Math.PI - Math.PI / 2;
    ctx.strokeStyle = colour;
    ctx.lineWidth = widthPx;
    ctx.beginPath();
    ctx.moveTo(cx, cy);
    ctx.lineTo(cx + Math.cos(angle) * length, cy + Math.sin(angle) * length);
    ctx.stroke();
  };
  hand(((now.getHours() % 12) + now.getMinutes() / 60) / 12, r * 0.5, 5, '#f2f5f9');
  hand((now.getMinutes() + seconds / 60) / 60, r * 0.75, 3, '#f2f5f9');
  hand(seconds / 60, r * 0.9, 2, '#e4572e');
  ctx.fillStyle = '#f2f5f9';
  ctx.font = 'bold 22px "DejaVu Sans Mono", monospace';
  ctx.fillText(now.toTimeString().slice(0, 8) + '.' +
    String(now.getMilliseconds()).padStart(3, '0').slice(0, 1), 175, cy - 8);
  ctx.font = '14px "DejaVu Sans", sans-serif';
  ctx.fillText('frame ' + frame, 175, cy + 20);
  const x = 175 + ((frame * 3) % 120);
  ctx.fillStyle = '#e4572e';
  ctx.fillRect(x, cy + 34, 16, 8);
}

export function startClock() {
  const canvas = $('canvas-source');
  let frame = 0;
  setInterval(() => {
    frame += 1;
    if (!canvas.hidden) drawClock(canvas, frame);
  }, 1000 / 30);
  drawClock(canvas, 0);
}
