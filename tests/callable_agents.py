"""Agent types with callable methods, for tests/test_callables.py (registered on import).

Written like an application's module: the types the methods use are defined at module level
(the schemas are built from the type hints when the class is defined). The workflow sandbox
re-imports this module for every run: no I/O at import time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

from perennial import AgentWorkflow, Message, agent_type, callable_method


class CartItem(BaseModel):
    sku: str
    qty: int = 1


class CartState(BaseModel):
    items: dict[str, int] = {}
    checked_out_at: datetime | None = None
    note: str | None = None


class CartSummary(BaseModel):
    """What the cart holds after a change."""

    items: int
    skus: list[str]


@agent_type("test_cart")
class Cart(AgentWorkflow[CartState]):
    """A shopping cart changed by typed calls; plain messages only read it."""

    async def on_message(self, message: Message) -> str:
        return f"{sum(self.state.items.values())} items"

    @callable_method
    async def add_item(
        self, sku: Annotated[str, Field(min_length=1, max_length=40)], qty: int = 1
    ) -> CartSummary:
        """Add qty of sku to the cart.

        Args:
            sku: The product code.
            qty: How many to add.
        """
        if qty < 1:
            raise ValueError("qty must be at least 1")
        self.state.items[sku] = self.state.items.get(sku, 0) + qty
        return self._summary()

    @callable_method
    def add_many(self, items: list[CartItem]) -> CartSummary:
        """Add several items at once."""
        for item in items:
            self.state.items[item.sku] = self.state.items.get(item.sku, 0) + item.qty
        return self._summary()

    @callable_method
    def remove_item(self, sku: str) -> CartSummary:
        """Remove every unit of sku; a sku that is not in the cart fails the call."""
        self.state.note = f"removing {sku}"  # changed first: a failed call must undo it
        del self.state.items[sku]
        return self._summary()

    @callable_method
    def count(self) -> int:
        """How many units the cart holds."""
        return sum(self.state.items.values())

    @callable_method
    def checkout(self, at: datetime, note: str | None = None) -> None:
        """Mark the cart checked out at a time."""
        self.state.checked_out_at = at
        self.state.note = note

    @callable_method
    def broken(self) -> CartSummary:
        """Returns something that is not a CartSummary: the method's bug fails its turn."""
        self.state.note = "broken"
        return "not a summary"  # type: ignore[return-value]

    def _summary(self) -> CartSummary:
        return CartSummary(items=sum(self.state.items.values()), skus=sorted(self.state.items))


@agent_type("test_cart_plus")
class CartPlus(Cart):
    """Inherits the cart's callable methods, adds one and withdraws `count` (overridden
    without the decorator)."""

    @callable_method
    def clear(self) -> int:
        """Empty the cart; returns how many units were removed."""
        removed = sum(self.state.items.values())
        self.state.items = {}
        return removed

    def count(self) -> int:
        return -1


@agent_type("test_cart_small")
class SmallCart(Cart):
    """The cart with tiny per-run limits, so it continues as new every few dozen calls."""

    max_history_events = 150
    max_updates_per_run = 60
    force_switch_history_events = 150
