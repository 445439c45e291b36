"""Keys that arrive in one burst are applied one after another, each to the focus as the keys
before it left it.

Textual 8.2.8 hands a key to the focused widget by posting it to that widget's queue; the
widget's own handlers run there, and only when the key has bubbled back up to the app are the
(non-priority) bindings run, ``tab``'s focus move among them. The app meanwhile goes on with its
own queue: a burst ``a<Tab>d`` (tmux send-keys, a slow SSH link, a paste without bracketed
paste) has all three keys posted to the description before the Tab, bubbling back, moves the
focus, so the ``d`` lands in the description too.

``KeysInOrder`` makes the app hold a key back while the one before it is still on its way
(handled by a widget, or bubbling up to the bindings), and hand it on once that one is done.
"""

from __future__ import annotations

from collections import deque
from typing import Any
from weakref import WeakSet

from textual import events
from textual.app import App
from textual.dom import DOMNode
from textual.timer import Timer

HELD_KEY_LIMIT = 1.0
"""Seconds a key waits at most for the one before it: a safety net should a widget vanish with
a key in hand (its queue closed), never what orders keys."""


class KeysInOrder(App[Any]):
    """An app that applies keys strictly one after another (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._key_in_flight: events.Key | None = None
        self._held_keys: deque[events.Key] = deque()
        self._held_timer: Timer | None = None
        self._watched: WeakSet[DOMNode] = WeakSet()

    async def on_event(self, event: events.Event) -> None:
        if not isinstance(event, events.Key):
            await super().on_event(event)
        elif not event.is_forwarded:
            # A key from the terminal (or Pilot).
            if self._key_in_flight is not None or self._held_keys:
                self._hold(event)
            else:
                await self._dispatch(event)
        else:
            # A key back from the focused widget: the app's bindings run now.
            await super().on_event(event)
            if event is self._key_in_flight:
                self.call_later(self._key_done, event)

    async def _dispatch(self, key: events.Key) -> None:
        self._key_in_flight = key
        await super().on_event(key)  # priority bindings here, else forwarded to the focus
        if key.is_forwarded and not key._stop_propagation:
            self._watch_chain()
        else:
            self.call_later(self._key_done, key)

    def _watch_chain(self) -> None:
        """Learn when the key in flight stops at a widget (handled there) on its way up."""
        node: DOMNode | None = self.focused or self.screen
        while node is not None and node is not self:
            if node not in self._watched and node.is_running:
                node.message_signal.subscribe(
                    self, lambda message, node=node: self._key_seen(node, message),
                    immediate=True)
                self._watched.add(node)
            node = node._parent

    def _key_seen(self, node: DOMNode, message: Any) -> None:
        """``node`` finished with ``message``; the key is done if it goes no further up."""
        if message is not self._key_in_flight:
            return
        goes_up = (message.bubble and node._parent is not None and node.is_parent_active
                   and node.is_attached and not message._stop_propagation)
        if not goes_up:
            self.call_later(self._key_done, message)

    def _hold(self, key: events.Key) -> None:
        self._held_keys.append(key)
        if self._held_timer is None:
            self._held_timer = self.set_timer(HELD_KEY_LIMIT, self._key_done)

    async def _key_done(self, key: events.Key | None = None) -> None:
        """``key`` (None: whichever, the wait is over) is done: hand on the next key held back.

        Always reached through ``call_later``, never at once: what the key's handler left for
        later on the app's queue (``Widget.focus`` moves the focus that way, so ``/`` opening a
        filter, say) runs before the next key is handed to the focus."""
        if key is not None and key is not self._key_in_flight:
            return  # an earlier key's news, late
        self._key_in_flight = None
        if self._held_timer is not None:
            self._held_timer.stop()
            self._held_timer = None
        if self._held_keys:
            self._held_timer = self.set_timer(HELD_KEY_LIMIT, self._key_done)
            # Once more to the back of the queue: the news that a key is done can be queued
            # ahead of what its binding's action then queues.
            self.call_later(self._hand_on)

    async def _hand_on(self) -> None:
        if self._key_in_flight is None and self._held_keys:
            await self._dispatch(self._held_keys.popleft())
