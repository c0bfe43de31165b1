module example.com/eventsink

go 1.22
