#!/usr/bin/python3
"""The seed back ends' repository flows, through SQLAlchemy (asyncio) with
asyncpg, against tables with pg_lifecycle enabled (issue 14's client suite).

Prints TAP-style "ok N - name" / "not ok N - name" lines; exits non-zero when
a check fails.  Usage: sqlalchemy_asyncpg.py <asyncpg DSN>
"""
import asyncio
import sys
import uuid

from sqlalchemy import Boolean, Column, ForeignKey, Integer, String, DateTime, BigInteger, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import declarative_base, relationship, selectinload, sessionmaker

Base = declarative_base()


class User(Base):
    __tablename__ = "users"
    id = Column(Integer, primary_key=True)
    email = Column(String, nullable=False)
    # The three columns pg_lifecycle keeps (map all three, so that schema tools
    # like Alembic autogenerate do not propose dropping them).
    deleted_at = Column(DateTime(timezone=True))
    deleted_by = Column(String)
    delete_event = Column(BigInteger)
    # ORM-side cascade, without passive_deletes: SQLAlchemy deletes the
    # children itself, one DELETE per row.
    posts = relationship("Post", cascade="all, delete-orphan", back_populates="user")


class Post(Base):
    __tablename__ = "posts"
    id = Column(Integer, primary_key=True)
    user_id = Column(Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    title = Column(String)
    deleted_at = Column(DateTime(timezone=True))
    deleted_by = Column(String)
    delete_event = Column(BigInteger)
    user = relationship("User", back_populates="posts")


class Team(Base):
    __tablename__ = "teams"
    id = Column(String, primary_key=True)   # a text key, bound as text
    deleted_at = Column(DateTime(timezone=True))
    deleted_by = Column(String)
    delete_event = Column(BigInteger)
    # Database-side cascade (ON DELETE CASCADE), passive_deletes: one DELETE.
    members = relationship("Member", cascade="all, delete-orphan", passive_deletes=True)


class Member(Base):
    __tablename__ = "members"
    id = Column(Integer, primary_key=True)
    team_id = Column(String, ForeignKey("teams.id", ondelete="CASCADE"), nullable=False)
    deleted_at = Column(DateTime(timezone=True))
    deleted_by = Column(String)
    delete_event = Column(BigInteger)


class SoftDeleteMixin:
    """The seeds' mixin: a boolean is_deleted next to deleted_at, set by the
    model's own soft_delete()/restore() and filtered by the repositories."""
    is_deleted = Column(Boolean, nullable=False, default=False)
    deleted_at = Column(DateTime(timezone=True))
    deleted_by = Column(String)
    delete_event = Column(BigInteger)

    def soft_delete(self):
        self.is_deleted = True
        self.deleted_at = func.now()

    def restore(self):
        self.is_deleted = False
        self.deleted_at = None


class Order(SoftDeleteMixin, Base):
    __tablename__ = "orders"
    id = Column(Integer, primary_key=True)


class OrderLine(SoftDeleteMixin, Base):
    __tablename__ = "order_lines"
    id = Column(Integer, primary_key=True)
    order_id = Column(Integer, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False)


results = []


def check(name, condition, detail=""):
    results.append(bool(condition))
    print(f"{'ok' if condition else 'not ok'} {len(results)} - {name}" + (f" # {detail}" if not condition and detail else ""))


async def main(dsn):
    engine = create_async_engine(dsn)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
        await conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_lifecycle"))
        for t in ("users", "posts", "teams", "members"):
            await conn.execute(text("SELECT lifecycle.soft_delete_enable(:t)"), {"t": t})
        # The seeds' SoftDeleteMixin filters is_deleted itself: hide => false, and the flag kept in step.
        for t in ("orders", "order_lines"):
            await conn.execute(text("SELECT lifecycle.soft_delete_enable(:t, hide => false, flag => 'is_deleted')"),
                               {"t": t})
        await conn.execute(text("CREATE TABLE IF NOT EXISTS audit (id serial, user_id int, outcome text)"))
        await conn.execute(text("SELECT lifecycle.count_enable('audit', '{user_id,outcome}')"))
    Session = sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)

    # 1. ORM delete without passive_deletes: children first, one statement
    #    each, then the parent; the unit of work checks every row count.
    async with Session() as s, s.begin():
        s.add(User(id=1, email="a@example.com", posts=[Post(id=10, title="x"), Post(id=11, title="y")]))
        s.add(User(id=2, email="b@example.com", posts=[Post(id=20, title="z")]))
    async with Session() as s, s.begin():
        # per request: the actor, for this transaction only (works with server-side parameters)
        await s.execute(text("SELECT set_config('lifecycle.actor', :who, true)"), {"who": "admin:7"})
        user = (await s.execute(select(User).options(selectinload(User.posts)).where(User.id == 1))).scalar_one()
        await s.delete(user)
    async with Session() as s:
        visible = (await s.execute(select(func.count()).select_from(Post))).scalar_one()
        check("ORM delete (ORM-side cascade): rows hidden, row counts accepted by the unit of work", visible == 1,
              f"visible posts {visible}")
        await s.execute(text("SET lifecycle.include_deleted = on"))
        by = (await s.execute(select(Post.deleted_by).where(Post.id == 10))).scalar_one()
        check("the actor set with set_config(..., true) is recorded", by == "admin:7", by)
        await s.execute(text("RESET lifecycle.include_deleted"))
        await s.commit()
    async with Session() as s, s.begin():
        # asyncpg types parameters as the server infers them (text for an untyped
        # id): bind an int with a cast — any integer width is converted to the key's type
        restored = (await s.execute(text("SELECT lifecycle.restore('users', CAST(:id AS bigint))"), {"id": 1})).scalar_one()
    check("one restore of the parent brings back the children the ORM deleted one by one", restored == 3,
          f"restored {restored}")

    # 2. Database-side cascade (passive_deletes) and a text key bound as text.
    async with Session() as s, s.begin():
        s.add(Team(id="t-1", members=[Member(id=1), Member(id=2)]))
    async with Session() as s, s.begin():
        team = await s.get(Team, "t-1")
        await s.delete(team)
    async with Session() as s, s.begin():
        left = (await s.execute(select(func.count()).select_from(Member))).scalar_one()
        check("passive_deletes: ON DELETE CASCADE soft-deletes the members", left == 0, f"members {left}")
        restored = (await s.execute(text("SELECT lifecycle.restore('teams', :id)"), {"id": "t-1"})).scalar_one()
        check("restore with a text id bound as a parameter", restored == 3, f"restored {restored}")

    # 3. The repository's own soft delete (UPDATE ... SET deleted_at = now()).
    async with Session() as s, s.begin():
        await s.execute(update(User).where(User.id == 2, User.deleted_at.is_(None)).values(deleted_at=func.now()))
    async with Session() as s, s.begin():
        await s.execute(text("SET LOCAL lifecycle.include_deleted = on"))
        row = (await s.execute(select(Post.deleted_at, Post.delete_event).where(Post.id == 20))).one()
        check("UserRepository.soft_delete (UPDATE) cascades to the posts", row.deleted_at is not None and row.delete_event is not None)
    async with Session() as s, s.begin():
        restored = (await s.execute(text("SELECT lifecycle.restore('users', :id)"), {"id": "2"})).scalar_one()
    check("... and restore() undoes it, the id bound as text", restored == 2, f"restored {restored}")

    # 3b. The seeds' SoftDeleteMixin: is_deleted and deleted_at set through the
    #     ORM, queries filtering is_deleted == False, restore through the ORM.
    async with Session() as s, s.begin():
        s.add_all([Order(id=1), Order(id=2), OrderLine(id=1, order_id=1), OrderLine(id=2, order_id=1)])
    async with Session() as s, s.begin():
        order = await s.get(Order, 1)
        order.soft_delete()
    async with Session() as s, s.begin():
        live_lines = (await s.execute(select(func.count()).select_from(OrderLine)
                                      .where(OrderLine.is_deleted == False))).scalar_one()  # noqa: E712
        event = (await s.execute(select(Order.delete_event).where(Order.id == 1))).scalar_one()
        check("SoftDeleteMixin.soft_delete(): an event, and the lines follow (is_deleted set on them)",
              live_lines == 0 and event is not None, f"live lines {live_lines}, event {event}")
    async with Session() as s, s.begin():
        order = await s.get(Order, 1)
        order.restore()
    async with Session() as s, s.begin():
        live_lines = (await s.execute(select(func.count()).select_from(OrderLine)
                                      .where(OrderLine.is_deleted == False, OrderLine.deleted_at.is_(None)))).scalar_one()  # noqa: E712
        check("SoftDeleteMixin.restore() brings the lines back too", live_lines == 2, f"live lines {live_lines}")
    async with Session() as s, s.begin():
        await s.delete(await s.get(Order, 2))
    async with Session() as s, s.begin():
        flag = (await s.execute(select(Order.is_deleted).where(Order.id == 2))).scalar_one()
        check("session.delete() of a flagged model sets is_deleted", flag is True, flag)

    # 4. Refresh tokens: concurrent rotations of one token (multi-tab refresh).
    async with engine.connect() as c:
        row = (await c.execute(text("SELECT family_id, token FROM lifecycle.token_family_create(:u, :d)"),
                               {"u": "u-1", "d": "browser"})).one()
        await c.commit()

    async def rotate(token):
        async with engine.connect() as c:
            r = (await c.execute(text("SELECT status, token FROM lifecycle.token_rotate(:t)"), {"t": token})).one()
            await c.commit()
            return r

    outcomes = await asyncio.gather(*[rotate(row.token) for _ in range(6)])
    statuses = sorted(o.status for o in outcomes)
    tokens = {o.token for o in outcomes}
    check("asyncio.gather rotations: one rotated, the others replayed with the same token",
          statuses == ["replayed"] * 5 + ["rotated"] and len(tokens) == 1, f"{statuses} {len(tokens)} tokens")
    async with engine.connect() as c:
        devices = (await c.execute(text("SELECT count(*) FROM lifecycle.user_token_families(:u)"), {"u": "u-1"})).scalar_one()
    check("user_token_families lists the user's device", devices == 1, devices)

    # 5. Sessions: validate returns the user for a get_current_user dependency.
    async with engine.connect() as c:
        sid = (await c.execute(text("SELECT lifecycle.session_create(:u, mfa_verified => true)"), {"u": "u-9"})).scalar_one()
        await c.commit()
        r = (await c.execute(text("SELECT user_id, mfa_verified FROM lifecycle.session_validate(:s)"), {"s": sid})).one()
        await c.commit()
        check("session_validate with a uuid parameter", r.user_id == "u-9" and r.mfa_verified)
        none = (await c.execute(text("SELECT count(*) FROM lifecycle.session_validate(:s)"), {"s": uuid.uuid4()})).scalar_one()
        check("session_validate of an unknown session: no row", none == 0)

    # 6. A FastAPI-style paginated list: page + exact total with a bound filter.
    async with engine.begin() as c:
        await c.execute(text("INSERT INTO audit (user_id, outcome) SELECT g % 5, CASE WHEN g % 4 = 0 THEN 'error' ELSE 'ok' END "
                             "FROM generate_series(1, 200) g"))
    async with engine.connect() as c:
        total = (await c.execute(text("SELECT lifecycle.count('audit', CAST(:f AS jsonb))"),
                                 {"f": '{"outcome": "error", "user_id": 3}'})).scalar_one()
        exact = (await c.execute(text("SELECT count(*) FROM audit WHERE outcome = 'error' AND user_id = 3"))).scalar_one()
        check("paginated total: count() with a bound jsonb filter equals count(*)", total == exact, f"{total} vs {exact}")
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
    failed = results.count(False)
    print(f"1..{len(results)}")
    sys.exit(1 if failed else 0)
