// Files for the agent: upload with a progress bar, list, download and delete.

import { del, download, get, path, upload } from '../api.js';
import { bytes, h, relative, replace, time } from '../dom.js';
import { Gate } from '../socket.js';
import { busy, confirmDialog, emptyState, errorBox, field, notify, parseObject, progress } from '../ui.js';

const PAGE = 50;

export function filesPanel({ agentId, allowed, canRead }) {
  const error = errorBox();
  const file = h('input', { type: 'file', name: 'file', required: true });
  const metadata = h('textarea', { name: 'metadata', rows: 2, spellcheck: false, placeholder: '{"purpose": "summarize"}' });
  const bar = progress('Upload progress');
  const barStatus = h('p', { class: 'upload-status', 'aria-live': 'polite' });
  const uploadBox = h('div', { class: 'upload', hidden: true }, bar.el, barStatus);
  const form = h(
    'form',
    { class: 'stack' },
    error.el,
    field('File', file),
    field('Metadata (JSON object, optional)', metadata),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', text: 'Upload' })),
    uploadBox,
  );
  const list = h('div', { class: 'files' });
  const more = h('button', { type: 'button', class: 'link', text: 'Show more files', hidden: true });
  const el = h(
    'section',
    { class: 'card', 'aria-labelledby': 'files-title' },
    h('h2', { id: 'files-title', text: 'Files' }),
    allowed ? form : null,
    list,
    more,
  );
  let files = [];
  let nextOffset = null;

  async function remove(entry) {
    const ok = await confirmDialog({
      title: `Delete ${entry.filename}?`,
      body: [h('p', { text: 'The file is deleted from the hub for good; its room in your quota is freed.' })],
      confirm: 'Delete file',
      danger: true,
    });
    if (!ok) return;
    try {
      await del(path`/api/files/${entry.fileId}`);
      notify(`Deleted ${entry.filename}.`);
      reload();
    } catch (failure) {
      error.show(failure);
    }
  }

  function draw() {
    if (!files.length) {
      replace(list, emptyState('No files yet.'));
      return;
    }
    replace(
      list,
      h(
        'table',
        { class: 'table responsive' },
        h('caption', { class: 'visually-hidden', text: 'Files of this agent, newest first' }),
        h('thead', {}, h('tr', {}, ['Name', 'Size', 'Type', 'Uploaded', 'Actions'].map((t) => h('th', { scope: 'col', text: t })))),
        h(
          'tbody',
          {},
          files.map((entry) =>
            h(
              'tr',
              { dataset: { fileId: entry.fileId } },
              h('th', { scope: 'row', 'data-label': 'Name', class: 'file-name', text: entry.filename }),
              h('td', { 'data-label': 'Size', text: bytes(entry.size) }),
              h('td', { 'data-label': 'Type', text: entry.contentType }),
              h('td', { 'data-label': 'Uploaded', title: time(entry.uploadedAt), text: relative(entry.uploadedAt) }),
              h(
                'td',
                { 'data-label': 'Actions' },
                h(
                  'div',
                  { class: 'actions' },
                  h('button', {
                    type: 'button',
                    class: 'secondary small',
                    text: 'Download',
                    'aria-label': `Download ${entry.filename}`,
                    onclick: () => download(entry.fileId, entry.filename).catch((f) => error.show(f)),
                  }),
                  allowed
                    ? h('button', {
                        type: 'button',
                        class: 'danger small',
                        text: 'Delete',
                        'aria-label': `Delete ${entry.filename}`,
                        onclick: () => remove(entry),
                      })
                    : null,
                ),
              ),
            ),
          ),
        ),
      ),
    );
  }

  async function reload() {
    if (!canRead) return;
    try {
      const page = await get(path`/api/agents/${agentId}/files`, { limit: PAGE });
      files = page.files;
      nextOffset = page.nextOffset;
      more.hidden = !page.hasMore;
      draw();
    } catch (failure) {
      error.show(failure);
    }
  }

  more.addEventListener('click', async () => {
    try {
      const page = await get(path`/api/agents/${agentId}/files`, { limit: PAGE, offset: nextOffset });
      files = files.concat(page.files);
      nextOffset = page.nextOffset;
      more.hidden = !page.hasMore;
      draw();
    } catch (failure) {
      error.show(failure);
    }
  });

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.clear();
    const chosen = file.files?.[0];
    if (!chosen) {
      error.show('Choose a file first.');
      return;
    }
    let meta;
    try {
      meta = metadata.value.trim() ? parseObject(metadata.value, 'Metadata') : null;
    } catch (failure) {
      error.show(failure.message);
      return;
    }
    uploadBox.hidden = false;
    uploadBox.dataset.state = 'uploading';
    bar.set(0);
    barStatus.textContent = `Uploading ${chosen.name} (${bytes(chosen.size)})…`;
    await busy(form, async () => {
      try {
        const sent = upload(path`/api/agents/${agentId}/upload`, chosen, meta, (loaded, total) => {
          bar.set(total ? loaded / total : 0);
        });
        const answer = await sent.promise;
        bar.set(1);
        uploadBox.dataset.state = 'done';
        barStatus.textContent = `Uploaded ${answer.filename} (${bytes(answer.size)}).`;
        form.reset();
        reload();
      } catch (failure) {
        uploadBox.dataset.state = 'failed';
        barStatus.textContent = 'Upload failed.';
        error.show(failure);
      }
    });
  });

  // Someone else's upload finishing (the CLI, another tab) shows up in the list too.
  const gate = new Gate((event) => {
    if (event.done) reload();
  });

  return {
    el,
    reload: async () => {
      gate.close();
      await reload();
      gate.open();
    },
    progress: (event) => gate.push(event),
  };
}
