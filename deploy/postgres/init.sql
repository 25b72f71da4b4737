-- One database per service on one Postgres server (the services also create a missing one).
CREATE DATABASE users;
CREATE DATABASE products;
CREATE DATABASE inventory;
CREATE DATABASE orders;
CREATE DATABASE payments;
CREATE DATABASE notifications;
