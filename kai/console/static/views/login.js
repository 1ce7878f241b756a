// Signing in: with a password, or by asking for a link by email (it lands on /login/magic).

import { h, replace, uid } from '../dom.js';
import { requestMagicLink, signIn } from '../session.js';
import { busy, errorBox, field } from '../ui.js';

export function loginView(root, { message = null } = {}) {
  const titleId = uid('signin');
  const error = errorBox();
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true });
  const password = h('input', {
    type: 'password',
    name: 'password',
    autocomplete: 'current-password',
    required: true,
  });
  const form = h(
    'form',
    { class: 'card stack', 'aria-labelledby': titleId },
    h('h1', { id: titleId, tabindex: -1, text: 'Sign in to kai' }),
    message ? h('p', { class: 'info', role: 'status', text: message }) : null,
    error.el,
    field('Email', email),
    field('Password', password),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', text: 'Sign in' })),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.clear();
    await busy(form, async () => {
      try {
        await signIn(email.value.trim(), password.value);
      } catch (failure) {
        error.show(failure);
      }
    });
    if (!error.el.hidden) password.focus();
  });

  const linkTitle = uid('magic');
  const linkError = errorBox();
  const linkEmail = h('input', { type: 'email', name: 'email', autocomplete: 'email', required: true });
  const linkStatus = h('p', { class: 'info', role: 'status', hidden: true });
  const linkForm = h(
    'form',
    { class: 'card stack', 'aria-labelledby': linkTitle },
    h('h2', { id: linkTitle, text: 'Or sign in with a link' }),
    h('p', { class: 'muted', text: 'We email you a link that signs you in once, within 15 minutes.' }),
    linkError.el,
    linkStatus,
    field('Email for the link', linkEmail),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'secondary', text: 'Email me a link' })),
  );
  linkForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    linkError.clear();
    linkStatus.hidden = true;
    await busy(linkForm, async () => {
      try {
        const answer = await requestMagicLink(linkEmail.value.trim());
        linkStatus.textContent = answer.message ?? 'If the address has an account, a link is on its way.';
        linkStatus.hidden = false;
      } catch (failure) {
        linkError.show(failure);
      }
    });
  });

  replace(root, h('div', { class: 'login' }, form, linkForm));
  email.focus();
  return null;
}
