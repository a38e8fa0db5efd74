// Chat panel of /watch/<stream>: reads the room over WebSocket; after a display name is set,
// posts too. Messages show their stream time (seconds since the stream started).
'use strict';
(function () {
  const stream = decodeURIComponent(location.pathname.split('/').filter(Boolean)[1] || '');
  const list = document.getElementById('chat-messages');
  const form = document.getElementById('chat-form');
  const nameInput = document.getElementById('chat-name');
  const textInput = document.getElementById('chat-text');
  const status = document.getElementById('chat-status');
  let socket = null;
  let retry = 1000;

  function add(message) {
    const item = document.createElement('li');
    item.dataset.id = String(message.id);
    const who = document.createElement('strong');
    who.textContent = message.name;
    const when = document.createElement('span');
    when.className = 'meta';
    when.textContent = message.stream_time == null ? '' : ' ' + formatTime(message.stream_time);
    item.append(who, when, document.createTextNode(' ' + message.text));
    list.append(item);
    while (list.children.length > 200) list.firstElementChild.remove();
    list.scrollTop = list.scrollHeight;
  }

  function formatTime(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    return Math.floor(s / 60) + ':' + String(s % 60).padStart(2, '0');
  }

  function connect(name) {
    if (socket) socket.close(1000);
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const query = name ? '?name=' + encodeURIComponent(name) : '';
    socket = new WebSocket(scheme + '//' + location.host + '/api/v1/streams/' + encodeURIComponent(stream) + '/chat' + query);
    const current = socket;
    socket.onmessage = (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      if (frame.type === 'joined') {
        list.replaceChildren();
        frame.messages.forEach(add);
        status.textContent = frame.can_post ? 'Chatting as ' + frame.name : 'Set a name to chat';
        retry = 1000;
      } else if (frame.type === 'message') {
        add(frame);
      } else if (frame.type === 'deleted') {
        const gone = list.querySelector('[data-id="' + frame.id + '"]');
        if (gone) gone.remove();
      } else if (frame.type === 'error') {
        status.textContent = frame.message;
      }
    };
    socket.onclose = () => {
      if (current !== socket) return;
      status.textContent = 'Chat disconnected; reconnecting…';
      setTimeout(() => connect(nameInput.value.trim()), retry);
      retry = Math.min(retry * 2, 30000);
    };
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const name = nameInput.value.trim();
    const text = textInput.value.trim();
    if (name && (!socket || !socket.url.includes('name='))) {
      connect(name);
      socket.addEventListener('open', () => {
        if (text) socket.send(JSON.stringify({ type: 'message', text }));
      }, { once: true });
    } else if (text && socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ type: 'message', text }));
    }
    textInput.value = '';
  });
  connect('');
})();
