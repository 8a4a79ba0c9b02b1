// The annotator's page: login -> instructions -> qualification (retry until passed) -> clicks.
// Coordinates sent to the server are image pixels: 0-based, continuous, origin top-left, the
// same frame as the click file. The server validates and stores everything; this page only
// shows and measures (response time: from the image being shown to the click).
'use strict';

const state = {
  annotator: null,
  test: null,          // the open qualification attempt
  testClicks: [],
  pair: null,          // the pair on screen
  shownAt: null,       // performance.now() when the image was shown
  zoom: 1,
  busy: false,
};

const $ = (id) => document.getElementById(id);

function show(viewId) {
  for (const view of document.querySelectorAll('.view')) {
    view.classList.toggle('hidden', view.id !== viewId);
  }
  document.body.dataset.view = viewId;
}

function say(text, isError = true) {
  const box = $('message');
  box.textContent = text || '';
  box.classList.toggle('hidden', !text);
  box.classList.toggle('error', isError);
}

// The server's page token, sent back in X-Click-Token: other sites' pages cannot read it, so
// they cannot make requests that change anything in this annotator's name.
let clickToken = null;

async function fetchJson(method, path, body) {
  const options = {method, headers: {}};
  if (clickToken !== null) options.headers['X-Click-Token'] = clickToken;
  if (body !== undefined) {
    options.headers['Content-Type'] = 'application/json';
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  let payload = {};
  try {
    payload = await response.json();
  } catch (e) {
    payload = {error: `the server answered ${response.status} without JSON`};
  }
  return {response, payload};
}

async function api(method, path, body) {
  if (clickToken === null) {
    const {response, payload} = await fetchJson('GET', '/api/token');
    if (!response.ok) throw new Error(payload.error || `HTTP ${response.status}`);
    clickToken = payload.token;
  }
  let {response, payload} = await fetchJson(method, path, body);
  if (payload.code === 'bad_token') {
    // A restarted server has a new token; the refused request changed nothing, so send it again.
    clickToken = (await fetchJson('GET', '/api/token')).payload.token ?? null;
    ({response, payload} = await fetchJson(method, path, body));
  }
  if (!response.ok) {
    const error = new Error(payload.error || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return payload;
}

// --- Drawing helpers (canvas pixels = the frame's pixels times `scale`) -----------------------

function drawPolygon(ctx, vertices, scale) {
  ctx.beginPath();
  vertices.forEach(([x, y], i) => (i ? ctx.lineTo(x * scale, y * scale) :
                                        ctx.moveTo(x * scale, y * scale)));
  ctx.closePath();
  ctx.fillStyle = '#000';
  ctx.fill();
}

function drawBox(ctx, [xmin, ymin, xmax, ymax], scale, color) {
  ctx.save();
  ctx.setLineDash([6, 4]);
  ctx.lineWidth = 2;
  ctx.strokeStyle = color;
  ctx.strokeRect(xmin * scale, ymin * scale, (xmax - xmin) * scale, (ymax - ymin) * scale);
  ctx.restore();
}

function drawDot(ctx, [x, y], scale, color, radius = 6) {
  ctx.beginPath();
  ctx.arc(x * scale, y * scale, radius, 0, 2 * Math.PI);
  ctx.fillStyle = color;
  ctx.fill();
  ctx.lineWidth = 1.5;
  ctx.strokeStyle = '#222';
  ctx.stroke();
}

function drawCross(ctx, [x, y], color) {
  ctx.save();
  ctx.strokeStyle = color;
  ctx.lineWidth = 3;
  ctx.beginPath();
  ctx.moveTo(x - 7, y - 7); ctx.lineTo(x + 7, y + 7);
  ctx.moveTo(x + 7, y - 7); ctx.lineTo(x - 7, y + 7);
  ctx.stroke();
  ctx.restore();
}

function eventPoint(event, element, width, height) {
  // Element pixels -> frame pixels, whatever the element's displayed size (zoom, CSS scaling).
  // clientLeft/clientWidth leave out the border, which is not part of the picture.
  const rect = element.getBoundingClientRect();
  const x = (event.clientX - rect.left - element.clientLeft) / element.clientWidth * width;
  const y = (event.clientY - rect.top - element.clientTop) / element.clientHeight * height;
  return [Math.min(Math.max(x, 0), width), Math.min(Math.max(y, 0), height)];
}

// --- Login ---------------------------------------------------------------------------------------

async function login(name) {
  say('');
  const info = await api('POST', '/api/login', {annotator: name});
  state.annotator = info.annotator;
  localStorage.setItem('annotator', info.annotator);
  $('who').textContent = `annotator: ${info.annotator}`;
  if (info.flagged) {
    return finish('Stopped by quality control',
                  'Too many of your clicks fell outside the objects. Thank you for your time.');
  }
  if (info.qualified) return startTask();
  return showInstructions();
}

$('login-form').addEventListener('submit', (event) => {
  event.preventDefault();
  login($('annotator-name').value.trim()).catch((e) => say(e.message));
});

// --- Instructions ----------------------------------------------------------------------------------

async function showInstructions() {
  show('instructions-view');
  drawShapeExample();
  const example = await api('GET', '/api/example');
  const canvas = $('example-canvas');
  if (!example.image_id) {
    canvas.classList.add('hidden');
    $('example-caption').textContent = 'This dataset has no single-object photo to show.';
    return;
  }
  const image = new Image();
  image.onload = () => {
    const scale = Math.min(canvas.width / example.width, canvas.height / example.height);
    canvas.width = Math.round(example.width * scale);
    canvas.height = Math.round(example.height * scale);
    const ctx = canvas.getContext('2d');
    ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
    drawBox(ctx, example.box, scale, '#ffd400');
    drawDot(ctx, example.center, scale, '#ffd400', 8);
  };
  image.src = `/images/${encodeURIComponent(example.image_id)}`;
  $('example-caption').textContent =
      `Class "${example['class']}": the dashed box tightly encloses the object; ` +
      'the yellow dot at its center is the right click.';
}

function drawShapeExample() {
  const canvas = $('shape-canvas');
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#808080';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const vertices = [];
  for (let i = 0; i <= 16; i++) {  // A C shape: outer arc forward, inner arc back.
    const a = Math.PI * (0.3 + 1.4 * i / 16);
    vertices.push([150 + 100 * Math.cos(a), 120 - 100 * Math.sin(a)]);
  }
  for (let i = 16; i >= 0; i--) {
    const a = Math.PI * (0.3 + 1.4 * i / 16);
    vertices.push([150 + 55 * Math.cos(a), 120 - 55 * Math.sin(a)]);
  }
  drawPolygon(ctx, vertices, 1);
  const xs = vertices.map((v) => v[0]);
  const ys = vertices.map((v) => v[1]);
  const box = [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)];
  drawBox(ctx, box, 1, '#ffd400');
  drawDot(ctx, [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], 1, '#ffd400', 7);
  drawCross(ctx, [80, 120], '#e02020');  // Roughly where the mass of the C lies.
}

$('start-qualification').addEventListener('click', () => startQualification().catch(
    (e) => say(e.message)));

// --- Qualification ---------------------------------------------------------------------------------

async function startQualification() {
  say('');
  state.test = await api('GET',
      `/api/qualification?annotator=${encodeURIComponent(state.annotator)}`);
  state.testClicks = [];
  show('qualification-view');
  drawTestPolygon();
}

function drawTestPolygon() {
  const test = state.test;
  const index = state.testClicks.length;
  $('qual-counter').textContent =
      `Attempt ${test.attempt}, shape ${index + 1} of ${test.polygons.length}. ` +
      `Pass: ${test.min_passed} of ${test.polygons.length} clicks close to the box center.`;
  const canvas = $('qual-canvas');
  canvas.width = test.width;
  canvas.height = test.height;
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#808080';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  drawPolygon(ctx, test.polygons[index].vertices, 1);
}

$('qual-canvas').addEventListener('click', async (event) => {
  const test = state.test;
  if (!test || state.busy || state.testClicks.length >= test.polygons.length) return;
  state.testClicks.push(eventPoint(event, $('qual-canvas'), test.width, test.height));
  if (state.testClicks.length < test.polygons.length) return drawTestPolygon();
  state.busy = true;
  try {
    const result = await api('POST', '/api/qualification',
        {annotator: state.annotator, attempt: test.attempt, clicks: state.testClicks});
    showFeedback(result);
  } catch (e) {
    say(e.message);
  } finally {
    state.busy = false;
  }
});

function showFeedback(result) {
  show('feedback-view');
  const good = result.results.filter((r) => r.ok).length;
  $('feedback-message').textContent = result.passed ?
      `Passed: ${good} of ${result.results.length} clicks were close enough to the box center.` :
      `Not passed: ${good} of ${result.results.length} clicks were close enough; ` +
      `${state.test.min_passed} are needed. Look at where the box centers are, then try new shapes.`;
  $('feedback-message').className = result.passed ? 'passed' : 'failed';
  const grid = $('feedback-grid');
  grid.innerHTML = '';
  result.results.forEach((r, i) => {
    const figure = document.createElement('figure');
    const canvas = document.createElement('canvas');
    canvas.width = state.test.width;
    canvas.height = state.test.height;
    const ctx = canvas.getContext('2d');
    ctx.fillStyle = '#808080';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    drawPolygon(ctx, result.polygons[i].vertices, 1);
    drawBox(ctx, r.box, 1, '#20d040');
    // The click under the true center, so that a good click does not hide the center.
    drawDot(ctx, r.click, 1, r.ok ? '#ffd400' : '#e02020', 8);
    drawDot(ctx, r.center, 1, '#20d040', 4);
    const caption = document.createElement('figcaption');
    caption.textContent = `${r.ok ? 'ok' : 'too far'}: error ${(100 * r.error).toFixed(0)}% ` +
        'of the box size';
    figure.append(canvas, caption);
    grid.append(figure);
  });
  $('retry-button').classList.toggle('hidden', result.passed);
  $('continue-button').classList.toggle('hidden', !result.passed);
}

$('retry-button').addEventListener('click', () => startQualification().catch(
    (e) => say(e.message)));
$('continue-button').addEventListener('click', () => startTask().catch((e) => say(e.message)));

// --- Main task ---------------------------------------------------------------------------------

function finish(title, text) {
  show('done-view');
  $('done-title').textContent = title;
  $('done-text').textContent = text;
}

function showProgress(progress) {
  $('progress-text').textContent =
      `your clicks: ${progress.your_clicks} | pairs done: ${progress.pairs_complete} of ` +
      `${progress.pairs_total}`;
  $('progress-bar').style.width = `${100 * progress.pairs_complete / progress.pairs_total}%`;
}

function handleTaskError(e) {
  if (e.status === 403) {
    return finish('Stopped', e.message);
  }
  say(e.message);
}

async function startTask() {
  say('');
  const next = await api('GET', `/api/next?annotator=${encodeURIComponent(state.annotator)}`);
  if (!next.pair) {
    showProgress(next.progress);
    return finish('All done', 'No pair needs your click now. Thank you! ' +
                  `You made ${next.progress.your_clicks} clicks.`);
  }
  state.pair = next.pair;
  state.shownAt = null;
  show('task-view');
  showProgress(next.progress);
  $('class-name').textContent = next.pair['class'];
  const image = $('task-image');
  image.dataset.imageId = next.pair.image_id;
  image.dataset.class = next.pair['class'];
  image.dataset.ready = 'false';
  layoutImage();
  image.src = `/images/${encodeURIComponent(next.pair.image_id)}`;
}

function layoutImage() {
  const pair = state.pair;
  if (!pair) return;
  const frame = $('image-frame');
  const fit = Math.min(frame.clientWidth / pair.width, frame.clientHeight / pair.height, 4);
  const image = $('task-image');
  image.style.width = `${pair.width * fit * state.zoom}px`;
  image.style.height = `${pair.height * fit * state.zoom}px`;
}

$('task-image').addEventListener('load', () => {
  state.shownAt = performance.now();
  $('task-image').dataset.ready = 'true';
});

// One task request at a time: clicks and keys are ignored while one is in flight.
async function taskAction(action) {
  if (state.busy) return;
  state.busy = true;
  try {
    await action();
  } catch (e) {
    handleTaskError(e);
  } finally {
    state.busy = false;
  }
}

$('task-image').addEventListener('click', (event) => {
  const pair = state.pair;
  if (!pair || state.shownAt === null) return;  // Not shown yet: no timing.
  const [x, y] = eventPoint(event, $('task-image'), pair.width, pair.height);
  const seconds = (performance.now() - state.shownAt) / 1000;
  taskAction(async () => {
    const result = await api('POST', '/api/click', {
      annotator: state.annotator, image_id: pair.image_id, class: pair['class'], x, y,
      response_time_s: Math.round(seconds * 1000) / 1000});
    if (result.flagged) {
      return finish('Stopped by quality control',
                    'Too many of your clicks fell outside the objects. Thank you for your time.');
    }
    await startTask();
  });
});

function skipPair() {
  if (!state.pair) return;
  taskAction(async () => {
    await api('POST', '/api/skip', {annotator: state.annotator, image_id: state.pair.image_id,
                                    class: state.pair['class']});
    await startTask();
  });
}

function undoClick() {
  taskAction(async () => {
    const result = await api('POST', '/api/undo', {annotator: state.annotator});
    await startTask();  // Shows the undone pair again: it is reserved for this annotator.
    say(`Undone: your click on image ${result.undone.image_id} (${result.undone['class']}). ` +
        'Click it again.', false);
  });
}

function toggleZoom() {
  if (!state.pair) return;
  const frame = $('image-frame');
  const centerX = (frame.scrollLeft + frame.clientWidth / 2) / frame.scrollWidth;
  const centerY = (frame.scrollTop + frame.clientHeight / 2) / frame.scrollHeight;
  state.zoom = state.zoom === 1 ? 2 : 1;
  layoutImage();
  frame.scrollLeft = centerX * frame.scrollWidth - frame.clientWidth / 2;
  frame.scrollTop = centerY * frame.scrollHeight - frame.clientHeight / 2;
}

$('skip-button').addEventListener('click', skipPair);
$('undo-button').addEventListener('click', undoClick);
$('zoom-button').addEventListener('click', toggleZoom);
window.addEventListener('resize', layoutImage);
document.addEventListener('keydown', (event) => {
  if (document.body.dataset.view !== 'task-view' || event.ctrlKey || event.metaKey) return;
  const key = event.key.toLowerCase();
  if (key === 'n') skipPair();
  else if (key === 'u') undoClick();
  else if (key === 'z') toggleZoom();
});

// --- Start: resume a stored annotator, else ask ----------------------------------------------------

const remembered = localStorage.getItem('annotator');
if (remembered) {
  $('annotator-name').value = remembered;
  login(remembered).catch((e) => {
    show('login-view');
    say(e.message);
  });
} else {
  show('login-view');
}
