// Run a load from the dashboard: submit it through the API (the session cookie authenticates,
// the browser's Origin header satisfies the CSRF check), follow its Server-Sent Events, then
// open its report. No dependencies.
'use strict';

(function () {
  const form = document.getElementById('run-form');
  const progress = document.getElementById('progress');
  if (!form || !progress) return;

  const say = (text) => {
    const li = document.createElement('li');
    li.textContent = text;
    progress.appendChild(li);
  };

  const describe = {
    queued: () => 'queued',
    dispatched: (e) => `${e.region}: dispatched to ${e.agent} (attempt ${e.attempt})`,
    run_started: (e) => `${e.region}: run ${e.index} (${e.view}) started`,
    run_finished: (e) => `${e.region}: run ${e.index} finished` +
      (e.load_ms == null ? '' : `, load ${Math.round(e.load_ms)} ms`),
    retried: (e) => `${e.region}: retried after ${e.failed_agent}: ${e.reason}`,
    target_done: (e) => `${e.region}: report #${e.report_id}`,
    target_failed: (e) => `${e.region}: failed: ${e.failure.message}`,
  };

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    progress.textContent = '';
    const body = {
      url: form.url.value,
      from: form.from.value,
      runs: Number(form.runs.value),
      screenshot: form.screenshot.checked,
    };
    let answer;
    try {
      const r = await fetch('/api/loads', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      answer = await r.json();
      if (!r.ok) {
        say(`refused: ${answer.error}`);
        return;
      }
    } catch (e) {
      say(`cannot reach the controller: ${e}`);
      return;
    }
    const id = encodeURIComponent(answer.id);
    say(`accepted: load ${answer.id}`);
    const events = new EventSource(`/api/loads/${id}/events`);
    for (const [name, text] of Object.entries(describe)) {
      events.addEventListener(name, (e) => say(text(JSON.parse(e.data))));
    }
    events.addEventListener('done', (e) => {
      events.close();
      say(`done: ${JSON.parse(e.data).state}`);
      window.location.href = `/loads/${id}/report`;
    });
    events.onerror = () => say('the event stream broke off; reconnecting');
  });
})();
