// Lists live streams from the API, refreshed every second (a new stream shows within 2 s).
'use strict';
(function () {
  const list = document.getElementById('streams');
  const empty = document.getElementById('empty');

  function uptime(startedAt) {
    if (!startedAt) return '';
    const seconds = Math.max(0, Math.floor((Date.now() - Date.parse(startedAt)) / 1000));
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    return (h ? h + 'h ' : '') + (h || m ? m + 'm ' : '') + s + 's';
  }

  function render(streams) {
    list.replaceChildren(...streams.map((stream) => {
      const item = document.createElement('li');
      const link = document.createElement('a');
      link.href = '/watch/' + encodeURIComponent(stream.name);
      link.dataset.stream = stream.name;
      const title = document.createElement('span');
      title.className = 'title';
      title.textContent = stream.title || stream.name;
      const meta = document.createElement('span');
      meta.className = 'meta';
      const viewers = stream.viewers ? stream.viewers.current : 0;
      meta.textContent = viewers + (viewers === 1 ? ' viewer' : ' viewers') + ' · up ' + uptime(stream.started_at);
      const badge = document.createElement('span');
      badge.className = 'badge';
      badge.textContent = 'LIVE';
      link.append(badge, ' ', title, meta);
      if (stream.thumbnail_url) {
        // max-age of about a second: each refresh revalidates (304) until a new one is taken.
        const thumb = document.createElement('img');
        thumb.className = 'thumb';
        thumb.alt = '';
        thumb.src = stream.thumbnail_url;
        link.prepend(thumb);
      }
      item.append(link);
      return item;
    }));
    empty.hidden = streams.length > 0;
  }

  async function refresh() {
    try {
      const response = await fetch('/api/v1/streams?status=live', { cache: 'no-store' });
      if (response.ok) render((await response.json()).streams.filter((s) => s.status === 'live' || s.status === 'reconnecting'));
    } catch (e) {
      // Keep the last list; the next refresh retries.
    }
  }
  refresh();
  setInterval(refresh, 1000);
})();
