\pset format unaligned
\pset tuples_only on
select to_char(clock_timestamp(),'HH24:MI:SS.MS'), pid, backend_type, wait_event_type, wait_event, left(regexp_replace(query,'\s+',' ','g'),50) from pg_stat_activity where wait_event_type in ('Lock','LWLock','IO','IPC','BufferPin') and pid <> pg_backend_pid() \watch 0.02
