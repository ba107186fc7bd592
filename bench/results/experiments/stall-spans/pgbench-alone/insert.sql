insert into t (body) values (repeat('x', 600));
