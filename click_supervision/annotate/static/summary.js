// Renders GET /api/summary as tables; refreshes every 10 s. Opened with ?token=ADMIN (the link
// the server prints at start) it shows every annotator's row with gold results; otherwise the
// totals and the row of the annotator this browser remembers (gold results would give away
// which pairs are gold).
'use strict';

const adminToken = new URLSearchParams(window.location.search).get('token');
const annotator = localStorage.getItem('annotator');

function fill(table, header, rows) {
  table.innerHTML = '';
  if (header) {
    const head = table.insertRow();
    for (const name of header) {
      const cell = document.createElement('th');
      cell.textContent = name;
      head.append(cell);
    }
  }
  for (const row of rows) {
    const line = table.insertRow();
    for (const value of row) line.insertCell().textContent = value;
  }
}

const fmt = (value, digits = 2) => (value === null || value === undefined ? '-' :
    (typeof value === 'number' ? value.toFixed(digits) : String(value)));

async function refresh() {
  try {
    const query = annotator && !adminToken ? `?annotator=${encodeURIComponent(annotator)}` : '';
    const response = await fetch(`/api/summary${query}`,
                                 {headers: adminToken ? {'X-Admin-Token': adminToken} : {}});
    const s = await response.json();
    if (!response.ok) throw new Error(s.error || `HTTP ${response.status}`);
    fill(document.getElementById('totals'), null, [
      ['dataset', `${s.dataset} ${s.split}`],
      ['click file', s.click_file],
      ['pairs complete', `${s.pairs_complete} of ${s.pairs_total} ` +
                         `(${s.num_annotators_per_pair} annotators each)`],
      ['clicks (flagged)', `${s.clicks_total} (${s.clicks_flagged})`],
      ['hidden gold pairs', s.gold_pairs],
      ['median response time (s)', fmt(s.median_response_time_s)],
      ['annotation hours so far', fmt(s.annotation_hours, 3)],
      ['agreement: pairs with 2 clicks and boxes', s.agreement.pairs],
      ['agreement: median distance / box size', fmt(s.agreement.median_distance_rel, 3)],
      ['agreement: mean distance / box size', fmt(s.agreement.mean_distance_rel, 3)],
    ]);
    const admin = s.view === 'admin';
    document.getElementById('view-note').textContent = admin ?
        'Admin view: every annotator, with gold-pair results. Keep this link private.' :
        (annotator ? `Your own row (${annotator}). ` : 'No annotator in this browser. ') +
        'Every annotator\'s row is on the admin link printed when the server started.';
    const gold = (a) => (admin ? [a.gold_clicks, a.gold_missed] : []);
    fill(document.getElementById('annotators'),
         ['annotator', 'clicks', 'qualification attempts', 'qualified',
          ...(admin ? ['gold clicks', 'gold missed'] : []), 'flagged', 'skips',
          'median response (s)'],
         s.annotators.map((a) => [a.annotator, a.clicks, a.qualification_attempts,
                                  a.qualified ? 'yes' : 'no', ...gold(a),
                                  a.flagged ? 'FLAGGED' : 'no', a.skips,
                                  fmt(a.median_response_time_s)]));
    fill(document.getElementById('histogram'), ['usable clicks', 'pairs'],
         Object.entries(s.pairs_by_clicks));
    fill(document.getElementById('pairs'),
         ['image', 'class', 'clicks', ...(admin ? ['annotators'] : [])],
         s.per_pair.map((p) => [p.image_id, p['class'], p.clicks,
                                ...(admin ? [p.annotators.join(', ')] : [])]));
    document.getElementById('message').classList.add('hidden');
  } catch (e) {
    const box = document.getElementById('message');
    box.textContent = `cannot read the summary: ${e.message}`;
    box.classList.remove('hidden');
  }
}

refresh();
setInterval(refresh, 10000);
