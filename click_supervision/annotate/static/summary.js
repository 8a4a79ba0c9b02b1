// Renders GET /api/summary as tables; refreshes every 10 s.
'use strict';

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
    const response = await fetch('/api/summary');
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
    fill(document.getElementById('annotators'),
         ['annotator', 'clicks', 'qualification attempts', 'qualified', 'gold clicks',
          'gold missed', 'flagged', 'skips', 'median response (s)'],
         s.annotators.map((a) => [a.annotator, a.clicks, a.qualification_attempts,
                                  a.qualified ? 'yes' : 'no', a.gold_clicks, a.gold_missed,
                                  a.flagged ? 'FLAGGED' : 'no', a.skips,
                                  fmt(a.median_response_time_s)]));
    fill(document.getElementById('histogram'), ['usable clicks', 'pairs'],
         Object.entries(s.pairs_by_clicks));
    fill(document.getElementById('pairs'), ['image', 'class', 'clicks', 'annotators'],
         s.per_pair.map((p) => [p.image_id, p['class'], p.clicks, p.annotators.join(', ')]));
  } catch (e) {
    const box = document.getElementById('message');
    box.textContent = `cannot read the summary: ${e.message}`;
    box.classList.remove('hidden');
  }
}

refresh();
setInterval(refresh, 10000);
