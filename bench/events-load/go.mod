module example.com/eventsload

go 1.22
