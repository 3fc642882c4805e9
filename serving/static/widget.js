/*
 * supportbot customer widget: one <script src="https://<app>/widget.js" async></script> tag adds a chat
 * launcher and panel to any page. Plain modern JavaScript, no build step, no dependencies.
 *
 * Embedding attributes on the script tag (all optional; README "What a customer sees" lists them):
 *   data-title, data-greeting, data-position="right|left", data-color, data-text-color,
 *   data-lang, data-strings='{"send": "Senden", ...}', data-open="true", data-api="https://<app>".
 * A logged-in customer, signed by the site's server (README "Signed customer identity"):
 *   data-user-id, data-user-email, data-user-expires (Unix seconds), data-user-hash.
 *
 * Safety: every piece of message text is put on the page with textContent / text nodes, never as HTML.
 */
(() => {
  'use strict'

  const script = document.currentScript
  if (!script || window.Supportbot) return // loaded twice: keep the first widget

  const DEFAULT_STRINGS = {
    open: 'Open chat',
    openUnread: 'Open chat, {n} unread',
    close: 'Close chat',
    title: 'Support',
    subtitleBot: 'Our assistant replies right away',
    subtitlePending: 'Connecting you with a teammate…',
    subtitleHuman: 'You are chatting with {name}',
    subtitleHumanAnonymous: 'A teammate is answering',
    subtitleEnded: 'This conversation has ended',
    greeting: 'Hi! How can we help you today?',
    conversation: 'Conversation',
    messages: 'Messages',
    you: 'You',
    assistant: 'Assistant',
    teammate: 'Support team',
    sending: 'Sending…',
    typing: 'The assistant is typing',
    inputLabel: 'Message',
    inputHint: 'Enter sends the message; Shift+Enter starts a new line.',
    placeholder: 'Type your message…',
    send: 'Send',
    end: 'End chat',
    rateReply: 'Rate this reply',
    helpful: 'Helpful',
    notHelpful: 'Not helpful',
    feedbackThanks: 'Thanks for your feedback.',
    joined: '{name} joined the conversation',
    newMessage: 'New message from {name}',
    charsLeft: '{n} characters left',
    wait: 'Please wait for the reply before sending another message. Your message is still in the box.',
    rateLimited: 'You are sending messages too quickly. Please wait {seconds} seconds and send again; your message is still in the box.',
    busy: 'We are very busy right now. Please wait {seconds} seconds and send again; your message is still in the box.',
    tooLong: 'That message is too long: at most {max} characters fit. Your message is still in the box.',
    pasteTooLong: 'What you pasted is too long: only the first {max} characters fit in one message.',
    sendFailed: 'Your message could not be sent. It is still in the box; please try again.',
    offlineSend: 'We could not reach the server. Your message is still in the box; please try again.',
    replyInterrupted: 'The connection dropped during the reply. It will appear here once we are reconnected.',
    reconnecting: 'Connection lost. Reconnecting…',
    actionFailed: 'That did not work. Please try again.',
    csatQuestion: 'How would you rate this conversation?',
    csatStar: '{n} out of 5',
    csatComment: 'Anything you would like to add? (optional)',
    csatSubmit: 'Send rating',
    csatPick: 'Please choose from 1 to 5 stars.',
    csatThanks: 'Thank you for rating this conversation!',
    newConversation: 'Start a new conversation',
  }
  const ICONS = {
    chat: ['M21 15a2 2 0 0 1-2 2H7l-4 4V5a2 2 0 0 1 2-2h14a2 2 0 0 1 2 2z'],
    close: ['M18 6 6 18', 'M6 6l12 12'],
    send: ['M22 2 11 13', 'M22 2l-7 20-4-9-9-4 20-7z'],
    up: [
      'M7 10v12',
      'M15 5.9 14 10h5.8a2 2 0 0 1 2 2.3l-1.4 8A2 2 0 0 1 18.4 22H4a2 2 0 0 1-2-2v-8a2 2 0 0 1 2-2h2.8' +
        'a2 2 0 0 0 1.8-1.1L12 2a3.1 3.1 0 0 1 3 3.9z',
    ],
    down: [
      'M17 14V2',
      'M9 18.1 10 14H4.2a2 2 0 0 1-2-2.3l1.4-8A2 2 0 0 1 5.6 2H20a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2h-2.8' +
        'a2 2 0 0 0-1.8 1.1L12 22a3.1 3.1 0 0 1-3-3.9z',
    ],
    star: ['M12 2l3.1 6.3 6.9 1-5 4.9 1.2 6.8-6.2-3.2-6.2 3.2L7 14.2 2 9.3l6.9-1z'],
  }
  const IDLE_STREAM_MS = 45000 // the server sends a keep-alive every 15 s; silence this long means a dead link
  const MAX_RETRY_MS = 15000

  // ---- Configuration from the embedding page ------------------------------------------------------

  const data = script.dataset
  const apiBase = (data.api || new URL(script.src, location.href).origin).replace(/\/+$/, '')
  const strings = { ...DEFAULT_STRINGS, ...onlyStrings(parseJson(data.strings)) }
  const identity = signedIdentity()
  // Each signed-in customer resumes only their own conversation on a shared browser.
  const storageKey = identity ? `supportbot:${apiBase}:${identity.user_id}` : `supportbot:${apiBase}`

  function signedIdentity() {
    if (!data.userId || !data.userEmail || !data.userHash || !data.userExpires) return null
    const expires = Number(data.userExpires)
    if (!Number.isInteger(expires)) {
      console.warn('supportbot widget: data-user-expires is not a Unix time in seconds; ignoring the identity')
      return null
    }
    return { user_id: data.userId, email: data.userEmail, expires, hash: data.userHash }
  }

  function parseJson(text) {
    try {
      return text ? JSON.parse(text) : {}
    } catch {
      console.warn('supportbot widget: data-strings is not valid JSON; using the default texts')
      return {}
    }
  }

  function onlyStrings(object) {
    return Object.fromEntries(Object.entries(object || {}).filter(([key, value]) => key in DEFAULT_STRINGS && typeof value === 'string'))
  }

  function fmt(template, values = {}) {
    return template.replace(/\{(\w+)\}/g, (whole, key) => (key in values ? String(values[key]) : whole))
  }

  // ---- State --------------------------------------------------------------------------------------

  const state = {
    config: { company_name: null, greeting: null, max_message_chars: 2000 },
    conversation: null, // {id, token}, kept in localStorage so reloads and other pages continue it
    status: 'bot',
    agent: null,
    rendered: new Map(), // message id -> element: each message is shown once, whichever way it came
    ratings: new Map(), // message id -> 'up' | 'down'
    cursor: 0, // last message id received on the live stream; a reconnect resumes after it
    sending: false,
    open: false,
    unread: 0,
    follower: null,
    csatDone: false,
  }

  const store = {
    get(area, key) {
      try {
        return window[area].getItem(key)
      } catch {
        return null // storage blocked (privacy settings): the widget still works for this page
      }
    },
    set(area, key, value) {
      try {
        if (value === null) window[area].removeItem(key)
        else window[area].setItem(key, value)
      } catch {
        /* storage blocked */
      }
    },
  }

  // ---- DOM helpers: text goes in as text nodes only ------------------------------------------------

  function h(tag, props = {}, ...children) {
    const node = document.createElement(tag)
    for (const [key, value] of Object.entries(props)) {
      if (value === null || value === undefined || value === false) continue
      if (key === 'class') node.className = value
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value)
      else node.setAttribute(key, value === true ? '' : String(value))
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child)
    return node
  }

  function icon(name) {
    const ns = 'http://www.w3.org/2000/svg'
    const svg = document.createElementNS(ns, 'svg')
    const attributes = { viewBox: '0 0 24 24', 'aria-hidden': 'true', focusable: 'false', class: `sb-icon sb-icon--${name}` }
    for (const [key, value] of Object.entries(attributes)) svg.setAttribute(key, value)
    for (const d of ICONS[name]) {
      const path = document.createElementNS(ns, 'path')
      path.setAttribute('d', d)
      svg.append(path)
    }
    return svg
  }

  const srOnly = (text, props = {}) => h('span', { class: 'sb-sr', ...props }, text)

  // ---- Building the widget ------------------------------------------------------------------------

  const host = h('div', { 'data-supportbot-widget': '' })
  const shadow = host.attachShadow({ mode: 'open' })
  const root = h('div', {
    class: 'sb', 'data-position': data.position === 'left' ? 'left' : 'right',
    lang: data.lang || document.documentElement.lang || 'en', hidden: true,
  })
  for (const [attribute, property] of [['color', '--sb-accent'], ['textColor', '--sb-on-accent']]) {
    const value = data[attribute]
    if (value && window.CSS && CSS.supports('color', value)) root.style.setProperty(property, value)
  }
  const stylesheet = h('link', { rel: 'stylesheet', href: `${apiBase}/widget.css` })
  const reveal = () => { root.hidden = false }
  stylesheet.addEventListener('load', reveal)
  stylesheet.addEventListener('error', reveal)

  const title = h('h2', { class: 'sb-title', id: 'sb-title' }, data.title || strings.title)
  const subtitle = h('p', { class: 'sb-subtitle', id: 'sb-subtitle' }, strings.subtitleBot)
  const endButton = h('button', { type: 'button', class: 'sb-end', hidden: true, onclick: endConversation }, strings.end)
  const closeButton = h('button', {
    type: 'button', class: 'sb-icon-button', 'aria-label': strings.close, title: strings.close, onclick: () => setOpen(false),
  }, icon('close'))
  const header = h('div', { class: 'sb-header' }, h('div', { class: 'sb-heading' }, title, subtitle), endButton, closeButton)

  const greetingText = h('p', { class: 'sb-text' }, data.greeting || strings.greeting)
  const greeting = h('div', { class: 'sb-msg sb-msg--bot sb-greeting' }, srOnly(`${strings.assistant}: `), greetingText)
  const log = h('div', {
    class: 'sb-log', role: 'log', 'aria-live': 'polite', 'aria-relevant': 'additions', 'aria-label': strings.messages,
  }, greeting)
  const draftText = h('p', { class: 'sb-text' })
  // The reply as it streams in: hidden from screen readers, which hear the finished reply in the log.
  const draft = h('div', { class: 'sb-msg sb-msg--bot sb-draft', 'aria-hidden': 'true', hidden: true }, draftText)
  const typing = h('div', { class: 'sb-typing', 'aria-hidden': 'true', hidden: true }, h('span'), h('span'), h('span'))
  const typingStatus = h('div', { class: 'sb-sr', role: 'status' })
  const csat = buildCsat()
  const newConversationButton = h('button', { type: 'button', class: 'sb-link-button', onclick: startOver }, strings.newConversation)
  const endedBox = h('div', { class: 'sb-ended', hidden: true }, newConversationButton)
  const scroller = h('div', { class: 'sb-scroll', tabindex: '0', role: 'region', 'aria-label': strings.conversation },
    log, draft, typing, csat.wrapper, endedBox)

  const connection = h('p', { class: 'sb-connection', role: 'status' })
  const notice = h('p', { class: 'sb-notice', role: 'alert' })

  const input = h('textarea', {
    id: 'sb-input', class: 'sb-input', rows: '1', maxlength: String(state.config.max_message_chars),
    placeholder: strings.placeholder, 'aria-describedby': 'sb-hint sb-count', enterkeyhint: 'send', autocomplete: 'off',
  })
  const count = h('span', { class: 'sb-count', id: 'sb-count' })
  const sendButton = h('button', { type: 'submit', class: 'sb-send', 'aria-label': strings.send, title: strings.send }, icon('send'))
  const composer = h(
    'form', { class: 'sb-composer', onsubmit: (event) => { event.preventDefault(); submit() } },
    h('label', { for: 'sb-input', class: 'sb-sr' }, strings.inputLabel), input, sendButton,
    srOnly(strings.inputHint, { id: 'sb-hint' }), count,
  )

  const panel = h('div', {
    class: 'sb-panel', id: 'sb-panel', role: 'dialog', 'aria-labelledby': 'sb-title', 'aria-describedby': 'sb-subtitle',
    hidden: true,
  }, header, connection, scroller, notice, composer, typingStatus)
  const badge = h('span', { class: 'sb-badge', 'aria-hidden': 'true', hidden: true })
  const launcher = h('button', {
    type: 'button', class: 'sb-launcher', 'aria-controls': 'sb-panel', 'aria-expanded': 'false',
    'aria-label': strings.open, onclick: () => setOpen(!state.open),
  }, icon('chat'), icon('close'), badge)
  // Heard while the panel is closed, e.g. "New message from Dana".
  const announcer = h('div', { class: 'sb-sr', role: 'status' })
  root.append(panel, launcher, announcer)
  shadow.append(stylesheet, root)

  panel.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') {
      event.stopPropagation()
      setOpen(false)
    }
  })
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault()
      submit()
    }
  })
  input.addEventListener('input', inputChanged)
  input.addEventListener('paste', (event) => {
    const pasted = event.clipboardData ? event.clipboardData.getData('text') : ''
    const room = state.config.max_message_chars - (input.value.length - (input.selectionEnd - input.selectionStart))
    if (pasted.length > room) showNotice(fmt(strings.pasteTooLong, { max: state.config.max_message_chars }))
  })
  window.addEventListener('online', () => state.follower && state.follower.wake())
  window.addEventListener('offline', () => state.follower && state.follower.drop())
  // Another tab of the site started a new conversation or ended this one: follow it.
  window.addEventListener('storage', (event) => {
    if (event.key !== storageKey) return
    const next = saved()
    if (next && state.conversation && next.id === state.conversation.id) return
    reset()
    if (next) resume(next)
  })

  // ---- Opening and closing --------------------------------------------------------------------------

  function setOpen(open, { focus = true } = {}) {
    state.open = open
    panel.hidden = !open
    root.classList.toggle('sb-is-open', open)
    launcher.setAttribute('aria-expanded', String(open))
    store.set('sessionStorage', `${storageKey}:open`, open ? '1' : null)
    if (open) {
      state.unread = 0
      inputChanged() // its height can only be measured once the panel shows
      scrollToEnd(true)
      if (focus) input.focus()
    } else if (focus) {
      launcher.focus()
    }
    updateLauncher()
  }

  function updateLauncher() {
    badge.hidden = state.unread === 0
    badge.textContent = state.unread > 9 ? '9+' : String(state.unread)
    const label = state.open ? strings.close : state.unread ? fmt(strings.openUnread, { n: state.unread }) : strings.open
    launcher.setAttribute('aria-label', label)
    launcher.title = label
  }

  // ---- Showing messages -----------------------------------------------------------------------------

  function nearBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80
  }

  function scrollToEnd(force = false) {
    if (force || nearBottom()) requestAnimationFrame(() => { scroller.scrollTop = scroller.scrollHeight })
  }

  function authorName(message) {
    if (message.role === 'customer') return strings.you
    if (message.role === 'staff') return message.author || strings.teammate
    return strings.assistant
  }

  function messageNode(message) {
    const role = message.role === 'customer' || message.role === 'staff' ? message.role : 'bot'
    const node = h('div', { class: `sb-msg sb-msg--${role}`, 'data-id': message.id })
    if (message.role === 'staff') node.append(h('span', { class: 'sb-author' }, authorName(message)))
    else node.append(srOnly(`${authorName(message)}: `))
    node.append(h('p', { class: 'sb-text' }, String(message.text)))
    if (message.role === 'bot') node.append(ratingButtons(message.id))
    return node
  }

  // Keeps the log in message-id order whatever order messages arrive in; pending ones stay last.
  function place(node, position) {
    for (const child of log.children) {
      if (child === greeting) continue
      const other = Number(child.dataset.id)
      if (child.dataset.pending !== undefined || other > position) {
        log.insertBefore(node, child)
        return
      }
    }
    log.append(node)
  }

  function addMessage(message, { live = true } = {}) {
    if (!message || typeof message.id !== 'number' || state.rendered.has(message.id)) return false
    if (message.role === 'customer') dropPending(message.text)
    if (message.role === 'bot') {
      hideDraft()
      showTyping(false)
    }
    if (message.role === 'staff' && message.author) setAgent(message.author)
    const node = messageNode(message)
    state.rendered.set(message.id, node)
    place(node, message.id)
    if (live && message.role !== 'customer' && !state.open) {
      state.unread += 1
      updateLauncher()
      announcer.textContent = fmt(strings.newMessage, { name: authorName(message) })
    }
    scrollToEnd(message.role === 'customer')
    return true
  }

  function addPending(text) {
    const node = h('div', { class: 'sb-msg sb-msg--customer sb-pending', 'data-pending': '' },
      srOnly(`${strings.you}: `), h('p', { class: 'sb-text' }, text), h('span', { class: 'sb-meta' }, strings.sending))
    log.append(node)
    scrollToEnd(true)
    return node
  }

  function dropPending(text) {
    const wanted = String(text).trim()
    for (const node of log.querySelectorAll('[data-pending]')) {
      if (node.querySelector('.sb-text').textContent.trim() === wanted) {
        node.remove()
        return
      }
    }
  }

  function addNote(text) {
    const position = Math.max(0, ...state.rendered.keys()) + 0.5
    place(h('p', { class: 'sb-note', 'data-id': String(position) }, text), position)
    scrollToEnd()
  }

  function showDraft(piece) {
    showTyping(false)
    draft.hidden = false
    draftText.textContent += piece
    scrollToEnd()
  }

  function hideDraft() {
    draft.hidden = true
    draftText.textContent = ''
  }

  function showTyping(on) {
    typing.hidden = !on
    typingStatus.textContent = on ? strings.typing : ''
    if (on) scrollToEnd(true)
  }

  function showNotice(text) {
    notice.textContent = text || ''
  }

  function setAgent(name) {
    state.agent = name
    updateHeader()
  }

  function updateHeader() {
    title.textContent = data.title || state.config.company_name || strings.title
    const { status, agent } = state
    subtitle.textContent = status === 'pending_human' ? strings.subtitlePending
      : status === 'human' ? (agent ? fmt(strings.subtitleHuman, { name: agent }) : strings.subtitleHumanAnonymous)
        : status === 'resolved' ? strings.subtitleEnded : strings.subtitleBot
    endButton.hidden = !state.conversation || status === 'resolved'
    root.dataset.status = status
  }

  function applyStatus(status, agent) {
    const previous = state.status
    state.status = status
    if (agent) state.agent = agent
    if (status === 'human' && previous !== 'human') addNote(fmt(strings.joined, { name: state.agent || strings.teammate }))
    updateHeader()
    const ended = status === 'resolved'
    endedBox.hidden = !ended
    csat.wrapper.hidden = !ended
  }

  // ---- Talking to the app ---------------------------------------------------------------------------

  class ApiFailure extends Error {
    constructor(status, code, message, retryAfter = null) {
      super(message || code)
      this.status = status
      this.code = code
      this.retryAfter = retryAfter
    }
  }

  // Path of an API call about the current conversation.
  function here(path = '') {
    return `/api/conversations/${encodeURIComponent(state.conversation.id)}${path}`
  }

  function authHeaders() {
    return state.conversation ? { Authorization: `Bearer ${state.conversation.token}` } : {}
  }

  async function request(path, { method = 'GET', body, auth = true, signal } = {}) {
    const headers = auth ? authHeaders() : {}
    if (body !== undefined) headers['Content-Type'] = 'application/json'
    let response
    try {
      const payload = body === undefined ? undefined : JSON.stringify(body)
      response = await fetch(apiBase + path, { method, headers, body: payload, cache: 'no-store', signal })
    } catch (error) {
      if (error.name === 'AbortError') throw error
      throw new ApiFailure(0, 'network', String(error))
    }
    if (!response.ok) throw await failureOf(response)
    return response
  }

  async function requestJson(path, options) {
    return (await request(path, options)).json()
  }

  async function failureOf(response) {
    let code = 'error'
    let message = ''
    try {
      const body = await response.json()
      code = body.error.code
      message = body.error.message
    } catch {
      /* not our error shape: keep the status */
    }
    return new ApiFailure(response.status, code, message, Number(response.headers.get('Retry-After')) || null)
  }

  function explain(error) {
    if (!(error instanceof ApiFailure)) return strings.sendFailed
    if (error.code === 'rate_limited') return fmt(strings.rateLimited, { seconds: error.retryAfter || 60 })
    if (error.status === 503) return fmt(strings.busy, { seconds: error.retryAfter || 10 })
    if (error.code === 'message_too_long') return fmt(strings.tooLong, { max: state.config.max_message_chars })
    if (error.status === 0) return strings.offlineSend
    return strings.sendFailed
  }

  const isGone = (error) => error instanceof ApiFailure && [401, 403, 404].includes(error.status)

  // Reads server-sent events from a fetch response; `idleMs` of silence ends the read (dead link).
  async function readEvents(response, onEvent, idleMs = 0) {
    const reader = response.body.getReader()
    const decoder = new TextDecoder()
    let buffer = ''
    let timer = null
    const arm = () => {
      if (!idleMs) return
      clearTimeout(timer)
      timer = setTimeout(() => reader.cancel().catch(() => {}), idleMs)
    }
    try {
      arm()
      for (;;) {
        const { value, done } = await reader.read()
        if (done) return
        arm()
        buffer += decoder.decode(value, { stream: true })
        buffer = buffer.replace(/\r\n/g, '\n')
        let end
        while ((end = buffer.indexOf('\n\n')) !== -1) {
          const event = parseEvent(buffer.slice(0, end))
          buffer = buffer.slice(end + 2)
          if (event) onEvent(event)
        }
      }
    } finally {
      clearTimeout(timer)
    }
  }

  function parseEvent(block) {
    let name = 'message'
    let id = null
    const lines = []
    for (const line of block.split('\n')) {
      if (!line || line.startsWith(':')) continue
      const colon = line.indexOf(':')
      const field = colon === -1 ? line : line.slice(0, colon)
      let value = colon === -1 ? '' : line.slice(colon + 1)
      if (value.startsWith(' ')) value = value.slice(1)
      if (field === 'event') name = value
      else if (field === 'data') lines.push(value)
      else if (field === 'id') id = value
    }
    if (!lines.length) return null
    try {
      return { name, id, data: JSON.parse(lines.join('\n')) }
    } catch {
      return null
    }
  }

  // ---- The conversation -------------------------------------------------------------------------------

  function remember(conversation) {
    state.conversation = conversation
    store.set('localStorage', storageKey, conversation ? JSON.stringify(conversation) : null)
    updateHeader()
  }

  function saved() {
    try {
      const value = JSON.parse(store.get('localStorage', storageKey) || 'null')
      return value && typeof value.id === 'string' && typeof value.token === 'string' ? value : null
    } catch {
      return null
    }
  }

  async function ensureConversation() {
    if (state.conversation) return
    let body
    try {
      const opening = identity ? { channel: 'web', identity } : { channel: 'web' }
      body = await requestJson('/api/conversations', { method: 'POST', body: opening, auth: false })
    } catch (error) {
      if (!identity || error.status !== 403) throw error
      // A refused or expired signature: chat anyway, as a customer who proves who they are by e-mail.
      console.warn(`supportbot widget: the signed identity was not accepted (${error.code})`)
      body = await requestJson('/api/conversations', { method: 'POST', body: { channel: 'web' }, auth: false })
    }
    remember({ id: body.conversation.id, token: body.token })
    state.cursor = 0
    applyStatus(body.conversation.status, null)
    follow()
  }

  async function resume(conversation) {
    remember(conversation)
    try {
      const transcript = await requestJson(here())
      log.setAttribute('aria-busy', 'true') // the history is not news: do not read it all out
      for (const message of transcript.messages) addMessage(message, { live: false })
      state.cursor = Math.max(0, ...transcript.messages.map((message) => message.id))
      state.status = transcript.conversation.status
      applyStatus(transcript.conversation.status, null)
      log.removeAttribute('aria-busy')
      scrollToEnd(true)
      loadFeedback()
    } catch (error) {
      log.removeAttribute('aria-busy')
      if (isGone(error)) {
        forget()
        return
      }
      // Offline at load: the live stream retries and brings the history from the start.
    }
    follow()
  }

  async function loadFeedback() {
    try {
      const feedback = await requestJson(here('/feedback'))
      for (const rating of feedback.ratings) {
        state.ratings.set(rating.message_id, rating.rating)
        syncRating(rating.message_id)
      }
      if (feedback.csat) csatDone()
    } catch {
      /* ratings are shown as not given; giving one again replaces it anyway */
    }
  }

  // Back to a blank chat on this page; `forget` also drops the stored conversation for every page.
  function reset() {
    if (state.follower) state.follower.stop()
    state.follower = null
    state.conversation = null
    for (const node of [...log.children]) if (node !== greeting) node.remove()
    state.rendered.clear()
    state.ratings.clear()
    Object.assign(state, { cursor: 0, status: 'bot', agent: null, csatDone: false })
    csat.reset()
    connection.textContent = ''
    applyStatus('bot', null)
  }

  function forget() {
    reset()
    remember(null)
  }

  function startOver() {
    forget()
    showNotice('')
    input.focus()
  }

  // The live stream: every message and status change, resumed after a dropped connection.
  function follow() {
    if (state.follower) state.follower.stop()
    const conversation = state.conversation
    let stopped = false
    let attempt = new AbortController()
    let wake = () => {}
    const follower = {
      stop: () => {
        stopped = true
        attempt.abort()
        wake()
      },
      wake: () => wake(),
      // The device went offline: drop the stream now rather than wait for a dead socket to time out.
      drop: () => attempt.abort(),
    }
    state.follower = follower
    const active = () => !stopped && state.conversation === conversation
    ;(async () => {
      let delay = 1000
      while (active()) {
        attempt = new AbortController()
        try {
          const response = await request(
            `/api/conversations/${encodeURIComponent(conversation.id)}/events?after=${state.cursor}`,
            { signal: attempt.signal },
          )
          connection.textContent = ''
          delay = 1000
          await readEvents(response, onLiveEvent, IDLE_STREAM_MS)
          if (attempt.signal.aborted) throw new Error('dropped')
        } catch (error) {
          if (!active()) return
          if (isGone(error)) {
            forget()
            return
          }
          connection.textContent = strings.reconnecting
        }
        if (!active()) return
        await new Promise((resolve) => {
          wake = resolve
          setTimeout(resolve, delay)
        })
        delay = Math.min(delay * 2, MAX_RETRY_MS)
      }
    })()
  }

  function onLiveEvent({ name, id, data: payload }) {
    if (name === 'message') {
      state.cursor = Math.max(state.cursor, Number(id) || payload.id || 0)
      addMessage(payload)
    } else if (name === 'status') {
      applyStatus(payload.status, payload.agent)
    }
  }

  // ---- Sending ------------------------------------------------------------------------------------------

  // After any change of the text box: fit its height, show the characters left, and keep an unsent
  // draft for the next page of the site.
  function inputChanged() {
    input.style.height = 'auto'
    input.style.height = `${Math.min(input.scrollHeight, 128)}px`
    updateCount()
    store.set('sessionStorage', `${storageKey}:draft`, input.value || null)
  }

  function updateCount() {
    const left = state.config.max_message_chars - input.value.length
    count.textContent = left <= Math.min(100, state.config.max_message_chars / 10) ? fmt(strings.charsLeft, { n: left }) : ''
  }

  function putBack(text) {
    // Whatever the customer typed meanwhile stays too: nothing they wrote is lost.
    input.value = input.value.trim() ? `${text}\n${input.value}` : text
    inputChanged()
  }

  async function submit() {
    const text = input.value
    if (!text.trim()) return
    if (state.sending) {
      showNotice(strings.wait)
      return
    }
    if (text.trim().length > state.config.max_message_chars) {
      showNotice(fmt(strings.tooLong, { max: state.config.max_message_chars }))
      return
    }
    state.sending = true
    root.classList.add('sb-is-sending')
    showNotice('')
    input.value = ''
    inputChanged()
    let pending = addPending(text)
    let stored = false
    showTyping(true)
    try {
      for (let attempt = 0; ; attempt += 1) {
        try {
          await ensureConversation()
          const response = await request(here('/messages'), { method: 'POST', body: { text } })
          await readEvents(response, (event) => {
            if (event.name === 'customer_message') {
              stored = true
              addMessage(event.data, { live: false })
            } else if (event.name === 'token') {
              showDraft(String(event.data.text ?? ''))
            } else if (event.name === 'bot_message') {
              addMessage(event.data)
            } else if (event.name === 'conversation') {
              applyStatus(event.data.status, null)
            }
          })
          break
        } catch (error) {
          // The stored conversation is gone (e.g. the app's database was reset): start a new one once.
          if (attempt === 0 && !stored && isGone(error)) {
            forget()
            pending = addPending(text)
            continue
          }
          throw error
        }
      }
    } catch (error) {
      if (!stored) {
        pending.remove()
        putBack(text)
        showNotice(explain(error))
      } else {
        showNotice(strings.replyInterrupted)
      }
    } finally {
      state.sending = false
      root.classList.remove('sb-is-sending')
      showTyping(false)
      hideDraft()
    }
  }

  // ---- Ratings --------------------------------------------------------------------------------------------

  function ratingButtons(messageId) {
    const group = h('div', { class: 'sb-rate', role: 'group', 'aria-label': strings.rateReply })
    for (const [value, label] of [['up', strings.helpful], ['down', strings.notHelpful]]) {
      group.append(h('button', {
        type: 'button', class: 'sb-rate-button', 'data-rating': value, 'aria-label': label, title: label,
        'aria-pressed': String(state.ratings.get(messageId) === value), onclick: () => rate(messageId, value),
      }, icon(value)))
    }
    return group
  }

  function syncRating(messageId) {
    const node = state.rendered.get(messageId)
    if (!node) return
    for (const button of node.querySelectorAll('.sb-rate-button')) {
      button.setAttribute('aria-pressed', String(button.dataset.rating === state.ratings.get(messageId)))
    }
  }

  async function rate(messageId, rating) {
    try {
      await request(here(`/messages/${messageId}/feedback`), { method: 'POST', body: { rating } })
      state.ratings.set(messageId, rating)
      syncRating(messageId)
      typingStatus.textContent = strings.feedbackThanks
    } catch {
      showNotice(strings.actionFailed)
    }
  }

  async function endConversation() {
    if (!state.conversation) return
    try {
      const body = await requestJson(here('/end'), { method: 'POST' })
      applyStatus(body.conversation.status, null)
      csat.focus()
    } catch {
      showNotice(strings.actionFailed)
    }
  }

  function csatDone() {
    state.csatDone = true
    csat.node.hidden = true
    csat.thanks.hidden = false
  }

  function buildCsat() {
    const stars = []
    const fieldset = h('fieldset', { class: 'sb-stars' }, h('legend', { class: 'sb-csat-title' }, strings.csatQuestion))
    const paint = (upTo) => stars.forEach((label, index) => label.classList.toggle('sb-on', index < upTo))
    const chosen = () => Number((fieldset.querySelector('input:checked') || {}).value || 0)
    for (let n = 1; n <= 5; n += 1) {
      const radio = h('input', {
        type: 'radio', name: 'sb-score', value: String(n), id: `sb-star-${n}`, class: 'sb-sr', onchange: () => paint(n),
      })
      const label = h('label', { for: `sb-star-${n}`, class: 'sb-star', onmouseenter: () => paint(n), onmouseleave: () => paint(chosen()) },
        icon('star'), srOnly(fmt(strings.csatStar, { n })))
      stars.push(label)
      fieldset.append(radio, label)
    }
    const comment = h('textarea', { id: 'sb-csat-comment', class: 'sb-csat-comment', rows: '2', maxlength: '1000' })
    const thanks = h('p', { class: 'sb-csat-thanks', role: 'status', hidden: true }, strings.csatThanks)
    const node = h('form', {
      class: 'sb-csat',
      onsubmit: async (event) => {
        event.preventDefault()
        const score = chosen()
        if (!score) {
          showNotice(strings.csatPick)
          return
        }
        try {
          const body = { score, comment: comment.value.trim() || null }
          await request(here('/csat'), { method: 'POST', body })
          showNotice('')
          csatDone()
        } catch {
          showNotice(strings.actionFailed)
        }
      },
    }, fieldset, h('label', { for: 'sb-csat-comment', class: 'sb-csat-label' }, strings.csatComment), comment,
    h('button', { type: 'submit', class: 'sb-button' }, strings.csatSubmit))
    // The form and its thank-you line share one place at the end of the conversation.
    const wrapper = h('div', { class: 'sb-csat-wrap', hidden: true }, node, thanks)
    return {
      node,
      thanks,
      wrapper,
      focus: () => {
        const first = fieldset.querySelector('input')
        if (first && !node.hidden) first.focus()
      },
      reset: () => { node.reset(); paint(0); node.hidden = false; thanks.hidden = true },
    }
  }

  // ---- Start ----------------------------------------------------------------------------------------------

  async function loadConfig() {
    try {
      const config = await requestJson('/api/widget/config', { auth: false })
      state.config = { ...state.config, ...config }
      if (!data.greeting && config.greeting) greetingText.textContent = config.greeting
      input.setAttribute('maxlength', String(state.config.max_message_chars))
      updateHeader()
    } catch {
      /* the defaults work until the next page load */
    }
  }

  function mount() {
    (document.body || document.documentElement).append(host)
    input.value = store.get('sessionStorage', `${storageKey}:draft`) || ''
    updateHeader()
    loadConfig()
    const conversation = saved()
    if (conversation) resume(conversation)
    if (store.get('sessionStorage', `${storageKey}:open`) === '1' || data.open === 'true') setOpen(true, { focus: false })
  }

  // A small API for the embedding page, e.g. a "Chat with us" link: Supportbot.open().
  window.Supportbot = Object.freeze({
    open: () => setOpen(true),
    close: () => setOpen(false),
    toggle: () => setOpen(!state.open),
  })

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', mount, { once: true })
  else mount()
})()
